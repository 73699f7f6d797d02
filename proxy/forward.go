package proxy

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// forward proxies req, the inbound request, to x.upstream and writes the
// response to rw. It is httputil.ReverseProxy.ServeHTTP (Go 1.26) in Rewrite
// mode with the exchange's rewrite, RoundTrip and proxyError, the process's
// copy buffers and no FlushInterval, made cheaper per request (issue #13):
// the outbound header is built in one pass, with one backing array for its
// values, instead of cloned and then deleted from name by name; the
// outbound request is a shallow copy kept in the exchange (its header, URL
// and trailer are its own), and our transport takes got1xx directly rather
// than through a ClientTrace in a new context; a response header is copied
// into rw's by reference; Content-Type is parsed only when it may be
// text/event-stream. Everything it sends, writes, flushes
// and answers is what ReverseProxy would: hop-by-hop headers (with those
// that Connection lists) removed in both directions, "Te: trailers" and
// Upgrade kept, a client's Forwarded and X-Forwarded-* dropped, unparsable
// query parameters removed, an empty User-Agent unless one was sent, 1xx
// responses forwarded, trailers, immediate flushes for event streams and
// bodies of unknown length, protocol switches (WebSocket) over the hijacked
// connection, and a broken response body aborting the client's response
// (http.ErrAbortHandler).
func (x *exchange) forward(rw http.ResponseWriter, req *http.Request) {
	ctx := req.Context() // net/http cancels it when the client goes away

	reqUpType := upgradeType(req.Header)
	if !isPrintASCII(reqUpType) {
		x.proxyError(rw, req, fmt.Errorf("client tried to switch to invalid protocol %q", reqUpType))
		return
	}

	// One backing array for every value of the outbound header, with room
	// for what is added below: Te, Connection, Upgrade, X-Forwarded-For,
	// -Host, -Proto, X-Real-Ip and User-Agent.
	n := 8
	for _, vv := range req.Header {
		n += len(vv)
	}
	x.vals = make([]string, 0, n)
	out := &x.out
	if ctx == req.Context() {
		*out = *req
	} else {
		out = req.WithContext(ctx)
	}
	if _, ok := x.route.transport.(*upstreamTransport); !ok {
		// Another transport learns of 1xx responses by a ClientTrace;
		// ours is given got1xx (RoundTrip).
		out = out.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{Got1xxResponse: x.got1xx}))
	}
	out.Header = outboundHeader(req.Header, &x.vals)
	x.url = *req.URL
	out.URL = &x.url
	if req.Trailer != nil { // as req.Clone would: the server fills req's as it reads the body
		out.Trailer = req.Trailer.Clone()
	}
	out.TransferEncoding = slices.Clone(req.TransferEncoding)
	if req.ContentLength == 0 {
		out.Body = nil // Issue 16036: nil Body for http.Transport retries
	}
	if out.Body != nil {
		// Close does nothing but fail later reads: the transport may
		// read the body after the handler returned (issue 46866).
		ncr := &noopCloseReader{readCloser: out.Body}
		out.Body = ncr
		defer ncr.Close()
	}
	out.Close = false

	// Issue 21096: tell backend applications that care about trailer
	// support that we support trailers.
	if httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers") {
		x.setHeader(out.Header, "Te", "trailers")
	}
	// Add back what protocol upgrades need, such as for websockets.
	if reqUpType != "" {
		x.setHeader(out.Header, "Connection", "Upgrade")
		x.setHeader(out.Header, "Upgrade", reqUpType)
	}
	out.URL.RawQuery = cleanQueryParams(out.URL.RawQuery)

	x.pr = httputil.ProxyRequest{In: req, Out: out}
	x.rewrite(&x.pr)
	out = x.pr.Out

	if _, ok := out.Header["User-Agent"]; !ok {
		// Not Go's default User-Agent either.
		x.setHeader(out.Header, "User-Agent", "")
	}

	res, err := x.RoundTrip(out)
	x.rtMu.Lock()
	x.rtDone = true
	x.rtMu.Unlock()
	if err != nil {
		x.proxyError(rw, out, err)
		return
	}

	// Deal with 101 Switching Protocols responses: (WebSocket, h2c, etc)
	if res.StatusCode == http.StatusSwitchingProtocols {
		x.handleUpgradeResponse(rw, out, res)
		return
	}

	removeHopByHopHeaders(res.Header)
	copyHeader(rw.Header(), res.Header)

	// The "Trailer" header isn't included in the Transport's response,
	// at least for *http.Transport. Build it up from Trailer.
	announcedTrailers := len(res.Trailer)
	if announcedTrailers > 0 {
		trailerKeys := make([]string, 0, len(res.Trailer))
		for k := range res.Trailer {
			trailerKeys = append(trailerKeys, k)
		}
		rw.Header().Add("Trailer", strings.Join(trailerKeys, ", "))
	}

	rw.WriteHeader(res.StatusCode)

	err = x.copyResponse(rw, res.Body, flushInterval(res))
	if err != nil {
		defer res.Body.Close()
		// Since we're streaming the response, if we run into an error all
		// we can do is abort the request. Issue 23643: ReverseProxy should
		// use ErrAbortHandler on read error while copying body.
		if req.Context().Value(http.ServerContextKey) == nil {
			x.h.errorLog.Printf("suppressing panic for copyResponse error outside a server; copy error: %v", err)
			return
		}
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // close now, instead of defer, to populate res.Trailer

	if len(res.Trailer) > 0 {
		// Force chunking if we saw a response trailer. This prevents
		// net/http from calculating the length for short bodies and
		// adding a Content-Length.
		http.NewResponseController(rw).Flush()
	}

	if len(res.Trailer) == announcedTrailers {
		copyHeader(rw.Header(), res.Trailer)
		return
	}

	for k, vv := range res.Trailer {
		k = http.TrailerPrefix + k
		for _, v := range vv {
			rw.Header().Add(k, v)
		}
	}
}

// got1xx forwards a 1xx response while the round trip lasts.
func (x *exchange) got1xx(code int, header textproto.MIMEHeader) error {
	x.rtMu.Lock()
	defer x.rtMu.Unlock()
	if x.rtDone {
		// If RoundTrip has returned, don't try to further modify the
		// ResponseWriter's header map.
		return nil
	}
	h := x.rec.Header()
	copyHeader(h, http.Header(header))
	x.rec.WriteHeader(code)
	// Clear headers, it's not automatically done by
	// ResponseWriter.WriteHeader() for 1xx responses.
	clear(h)
	return nil
}

// outboundHeader returns a copy of in without the hop-by-hop headers, those
// that in's Connection lists, and a client's Forwarded and X-Forwarded-*,
// its values appended to *vals. Nil values stay nil, as http.Header.Clone
// keeps them.
func outboundHeader(in http.Header, vals *[]string) http.Header {
	var buf [4]string
	listed := connectionListed(in, buf[:0])
	out := make(http.Header, len(in))
	for k, vv := range in {
		if isHopHeader(k) || isForwardedHeader(k) || len(listed) > 0 && namesHeader(listed, k) {
			continue
		}
		if vv == nil {
			out[k] = nil
			continue
		}
		i := len(*vals)
		*vals = append(*vals, vv...)
		out[k] = (*vals)[i:len(*vals):len(*vals)]
	}
	return out
}

// namesHeader reports whether one of names is k once canonicalised, as
// h.Del(name) would find k, without allocating the canonical names that
// textproto does not keep (such as "Keep-Alive").
func namesHeader(names []string, k string) bool {
	for _, n := range names {
		if canonicalIs(n, k) {
			return true
		}
	}
	return false
}

// canonicalIs reports whether textproto.CanonicalMIMEHeaderKey(name) == k:
// a token canonicalises to the canonical key it equals in any case, any
// other name to itself.
func canonicalIs(name, k string) bool {
	if !httpguts.ValidHeaderFieldName(name) {
		return name == k
	}
	return equalFoldASCII(name, k) && textproto.CanonicalMIMEHeaderKey(k) == k
}

// isHopHeader reports whether k is one of the hop-by-hop headers of RFC
// 2616, Section 13.5.1 (and Proxy-Connection), as ReverseProxy lists them.
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// isForwardedHeader reports whether k is one of the forwarding headers that
// ReverseProxy drops from a client before Rewrite (rewriteDeletes).
func isForwardedHeader(k string) bool {
	return slices.Contains(rewriteDeletes, k)
}

// setHeader sets h[k] to the one value v, kept in x.vals.
func (x *exchange) setHeader(h http.Header, k, v string) {
	x.vals = append(x.vals, v)
	n := len(x.vals)
	h[k] = x.vals[n-1 : n : n]
}

// setXForwarded sets X-Forwarded-For (the client's IP, or none if
// RemoteAddr has none), X-Forwarded-Host and X-Forwarded-Proto on pr.Out,
// as pr.SetXForwarded does to a header without X-Forwarded-For.
func (x *exchange) setXForwarded(pr *httputil.ProxyRequest) {
	h := pr.Out.Header
	if len(h["X-Forwarded-For"]) > 0 {
		pr.SetXForwarded() // a prior value to join: a rare path
		return
	}
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		x.setHeader(h, "X-Forwarded-For", ip)
	} else {
		delete(h, "X-Forwarded-For")
	}
	x.setHeader(h, "X-Forwarded-Host", pr.In.Host)
	if pr.In.TLS == nil {
		x.setHeader(h, "X-Forwarded-Proto", "http")
	} else {
		x.setHeader(h, "X-Forwarded-Proto", "https")
	}
}

// removeHopByHopHeaders removes the hop-by-hop headers of RFC 9110,
// Section 7.6.1: those Connection lists, as h.Del(name) would, and the
// known ones (isHopHeader).
func removeHopByHopHeaders(h http.Header) {
	var buf [4]string
	listed := connectionListed(h, buf[:0])
	for k := range h {
		if isHopHeader(k) || len(listed) > 0 && namesHeader(listed, k) {
			delete(h, k)
		}
	}
}

// connectionListed appends to names the header names h's Connection
// header lists, and returns it.
func connectionListed(h http.Header, names []string) []string {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				names = append(names, sf)
			}
		}
	}
	return names
}

// copyHeader adds src's values to dst, as dst.Add would one by one; a key
// dst lacks takes src's slice, capped so that an append copies it.
func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		if len(vv) == 0 {
			continue
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		if dv, ok := dst[k]; ok {
			dst[k] = append(dv, vv...)
		} else {
			dst[k] = vv[:len(vv):len(vv)]
		}
	}
}

func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// flushInterval is how often the response body is flushed: immediately
// (-1) for Server-Sent Events and bodies of unknown length, else only when
// the copy ends (0).
func flushInterval(res *http.Response) time.Duration {
	// The MIME type is defined in https://www.w3.org/TR/eventsource/#text-event-stream;
	// mime.ParseMediaType only when the type before parameters may be it.
	resCT := res.Header.Get("Content-Type")
	if base, _, _ := strings.Cut(resCT, ";"); equalFoldASCII(strings.TrimSpace(base), "text/event-stream") {
		if baseCT, _, _ := mime.ParseMediaType(resCT); baseCT == "text/event-stream" {
			return -1
		}
	}
	// We might have the case of streaming for which Content-Length might be unset.
	if res.ContentLength == -1 {
		return -1
	}
	return 0
}

// reencodeQuery is set when GODEBUG sets urlmaxqueryparams, under which
// ReverseProxy re-encodes every query.
var reencodeQuery = strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams=")

// defaultMaxParams is net/url's limit of query parameters.
const defaultMaxParams = 10000

// cleanQueryParams removes the query parameters url.ParseQuery cannot parse
// (semicolons, bad escapes, too many), as ReverseProxy does.
func cleanQueryParams(s string) string {
	reencode := func(s string) string {
		v, _ := url.ParseQuery(s)
		return v.Encode()
	}
	if reencodeQuery {
		return reencode(s)
	}
	if numParams := strings.Count(s, "&") + 1; numParams > defaultMaxParams {
		return reencode(s)
	}
	for i := 0; i < len(s); {
		switch s[i] {
		case ';':
			return reencode(s)
		case '%':
			if i+2 >= len(s) || !ishex(s[i+1]) || !ishex(s[i+2]) {
				return reencode(s)
			}
			i += 3
		default:
			i++
		}
	}
	return s
}

func ishex(c byte) bool {
	switch {
	case '0' <= c && c <= '9':
		return true
	case 'a' <= c && c <= 'f':
		return true
	case 'A' <= c && c <= 'F':
		return true
	}
	return false
}

type noopCloseReader struct {
	readCloser io.ReadCloser
	closed     atomic.Bool
}

func (ncr *noopCloseReader) Close() error {
	ncr.closed.Store(true)
	return nil
}

var errReadAfterClose = errors.New("ReverseProxy does an invalid Read on closed Body")

func (ncr *noopCloseReader) Read(p []byte) (int, error) {
	if ncr.closed.Load() {
		return 0, errReadAfterClose
	}
	return ncr.readCloser.Read(p)
}

// isPrintASCII reports whether s is printable ASCII (internal/ascii.IsPrint).
func isPrintASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// equalFoldASCII reports whether s and t are equal under ASCII case folding
// (internal/ascii.EqualFold).
func equalFoldASCII(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i], t[i]
		if 'A' <= a && a <= 'Z' {
			a += 'a' - 'A'
		}
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		if a != b {
			return false
		}
	}
	return true
}
