package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// verdicts turns a version's findings into one-line conclusions.
func verdicts(vr *VersionReport) []string {
	if vr.ConnectFailed {
		return []string{"connection failed: " + vr.Error}
	}
	if !vr.Supported {
		return []string{"not supported: " + vr.Error}
	}
	var out []string
	r := vr.Resumption
	switch {
	case r.Attempts == 0:
	case r.Reused == r.Attempts:
		out = append(out, fmt.Sprintf("resumption: works (%d/%d reused)", r.Reused, r.Attempts))
	case r.Reused == 0:
		out = append(out, fmt.Sprintf("resumption: does not work (0/%d reused)", r.Attempts))
	default:
		out = append(out, fmt.Sprintf("resumption: partial (%d/%d reused)", r.Reused, r.Attempts))
	}
	out = append(out, "tickets: "+ticketText(vr.Tickets))
	l := vr.Lifetime
	switch {
	case l.Observable && l.Seconds > 0:
		out = append(out, fmt.Sprintf("lifetime hint: %d s (%s), from %s", l.Seconds, time.Duration(l.Seconds)*time.Second, l.Source))
	case l.Observable:
		out = append(out, fmt.Sprintf("lifetime hint: 0 (unspecified), from %s", l.Source))
	default:
		out = append(out, "lifetime hint: "+l.Note)
	}
	if s := vr.SessionID; s != nil {
		switch {
		case !s.Tested:
			out = append(out, "session IDs: "+s.Note)
		case s.Attempts > 0 && s.Reused == s.Attempts:
			out = append(out, fmt.Sprintf("session IDs: resumption works without tickets (%d/%d reused, %s)", s.Reused, s.Attempts, s.Method))
		case s.Reused > 0:
			out = append(out, fmt.Sprintf("session IDs: partial without tickets (%d/%d reused, %s)", s.Reused, s.Attempts, s.Method))
		case s.Returned:
			out = append(out, fmt.Sprintf("session IDs: returned but not resumed (0/%d reused, %s)", s.Attempts, s.Method))
		default:
			out = append(out, fmt.Sprintf("session IDs: none returned, no resumption without tickets (0/%d reused, %s)", s.Attempts, s.Method))
		}
	}
	return out
}

func ticketText(t Tickets) string {
	if !t.Issued {
		return "not issued"
	}
	size := fmt.Sprintf("%d bytes", t.Size)
	if t.MinSize != t.MaxSize {
		size = fmt.Sprintf("%d-%d bytes", t.MinSize, t.MaxSize)
	}
	s := "issued, " + size
	if t.PerConnection > 1 {
		s += fmt.Sprintf(", %d per connection", t.PerConnection)
	}
	switch {
	case t.Reconnects == 0:
	case t.Changed == t.Reconnects:
		s += ", change every connection"
	case t.Changed == 0:
		s += ", kept: not renewed on resumption"
	default:
		s += fmt.Sprintf(", change on %d/%d connections", t.Changed, t.Reconnects)
	}
	return s
}

// WriteText writes the report for a person: per version the verdicts and
// the connections in openssl s_client's words (New, Reused).
func WriteText(w io.Writer, rep *Report) error {
	var b strings.Builder
	sni := rep.ServerName
	if sni == "" {
		sni = "none"
	}
	tool := "openssl: " + rep.OpenSSLNote
	if rep.OpenSSL != "" {
		tool = "openssl: " + rep.OpenSSL
	}
	fmt.Fprintf(&b, "probe %s (SNI %s; %s)\n", rep.Addr, sni, tool)
	for _, vr := range rep.Versions {
		fmt.Fprintf(&b, "\nTLS %s", vr.Version)
		if vr.CipherSuite != "" {
			fmt.Fprintf(&b, "  %s", vr.CipherSuite)
		}
		b.WriteString("\n")
		for _, v := range vr.Verdicts {
			fmt.Fprintf(&b, "  %s\n", v)
		}
		if len(vr.Resumption.Conns) > 0 {
			b.WriteString("  connections:")
			for _, a := range vr.Resumption.Conns {
				st := "New"
				if a.Reused {
					st = "Reused"
				}
				if a.Error != "" {
					st = "failed"
				}
				fmt.Fprintf(&b, " %s", st)
				if a.NewTickets > 0 {
					fmt.Fprintf(&b, "(+%d ticket)", a.NewTickets)
				}
			}
			b.WriteString("\n")
			for _, a := range vr.Resumption.Conns {
				if a.Error != "" {
					fmt.Fprintf(&b, "  #%d: %s\n", a.N, a.Error)
				}
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
