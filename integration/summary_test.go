package integration

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"
)

// summaryRow is one line of the table printed at the end of the suite.
type summaryRow struct {
	mode, client, tls string
	resumed, total    int
	failed            int
	exp               expect
	note              string // instead of numbers, for a check that cannot run
}

// summary collects rows from every test.
var summary struct {
	// mu protects rows.
	mu   sync.Mutex
	rows []summaryRow
}

func addRow(r summaryRow) {
	summary.mu.Lock()
	summary.rows = append(summary.rows, r)
	summary.mu.Unlock()
}

// check records a tally in the summary and fails the test unless no
// connection failed and the share that resumed is as expected.
func check(t *testing.T, m mode, client string, version uint16, tl tally, exp expect) {
	t.Helper()
	addRow(summaryRow{mode: m.name, client: client, tls: versionName(version),
		resumed: tl.resumed, total: tl.conns, failed: tl.failed, exp: exp})
	if tl.failed > 0 {
		t.Errorf("%s %s: %d connection(s) failed (a handshake may be full, never fail): %s",
			client, versionName(version), tl.failed, strings.Join(tl.errs, "; "))
	}
	if !exp.ok(tl.resumed, tl.conns) {
		t.Errorf("%s %s: %s, want resumed %s", client, versionName(version), tl, exp)
	} else {
		t.Logf("%s %s: %s", client, versionName(version), tl)
	}
}

// printSummary prints the table to standard output and, if
// EDGEPROXY_INTEGRATION_SUMMARY names a file, writes it there too.
func printSummary(elapsed time.Duration) {
	summary.mu.Lock()
	rows := append([]summaryRow(nil), summary.rows...)
	summary.mu.Unlock()
	// Group by mode, in table order; within a mode, keep the order of the
	// tests.
	order := map[string]int{}
	for i, m := range modes {
		order[m.name] = i
	}
	sort.SliceStable(rows, func(i, j int) bool { return order[rows[i].mode] < order[rows[j].mode] })
	if len(rows) == 0 {
		return
	}
	var b strings.Builder
	writeSummary(&b, rows, elapsed)
	fmt.Print(b.String())
	if path := os.Getenv("EDGEPROXY_INTEGRATION_SUMMARY"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "integration: writing the summary: %v\n", err)
		}
	}
}

func writeSummary(w io.Writer, rows []summaryRow, elapsed time.Duration) {
	fmt.Fprintf(w, "\nedgeproxy integration summary (%d nodes behind HAProxy; suite took %s)\n", nodeCount, elapsed.Round(time.Second))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODE\tCLIENT / SCENARIO\tTLS\tRESUMED\t\tFAILED\tEXPECTED\t")
	for _, r := range rows {
		if r.note != "" {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t\t-\t-\tn/a: %s\n", r.mode, r.client, r.tls, r.note)
			continue
		}
		pct, verdict := "-", "FAIL"
		if r.total > 0 {
			pct = fmt.Sprintf("%.1f%%", 100*float64(r.resumed)/float64(r.total))
		}
		if r.failed == 0 && r.exp.ok(r.resumed, r.total) {
			verdict = "ok"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%d\t%s\t%s\n",
			r.mode, r.client, r.tls, r.resumed, r.total, pct, r.failed, r.exp, verdict)
	}
	tw.Flush()
}
