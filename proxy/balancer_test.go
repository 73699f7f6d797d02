package proxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

func testPool(t *testing.T, balance string, n int) *pool {
	t.Helper()
	rc := RouteConfig{Balance: balance}
	for i := range n {
		rc.Upstreams = append(rc.Upstreams, "http://u"+string(rune('0'+i)))
	}
	return newPool(&rc, time.Now, zap.NewNop(), nil)
}

func TestBalancerPick(t *testing.T) {
	tests := []struct {
		name     string
		balance  string
		inflight []int64
		down     []bool
		tried    []int
		picks    int
		want     string // names of the picked upstreams, in order; "-" for nil
	}{
		{name: "round robin cycles", balance: BalanceRoundRobin, inflight: []int64{0, 0, 0}, picks: 6, want: "u0 u1 u2 u0 u1 u2"},
		{name: "round robin skips down", balance: BalanceRoundRobin, down: []bool{false, true, false}, picks: 4, want: "u0 u2 u2 u0"},
		{name: "round robin skips tried", balance: BalanceRoundRobin, tried: []int{0, 1}, picks: 2, want: "u2 u2"},
		{name: "round robin all down", balance: BalanceRoundRobin, down: []bool{true, true}, picks: 1, want: "-"},
		{name: "least conn picks idlest", balance: BalanceLeastConn, inflight: []int64{5, 1, 3}, picks: 3, want: "u1 u1 u1"},
		{name: "least conn ties rotate", balance: BalanceLeastConn, inflight: []int64{2, 2}, picks: 4, want: "u0 u1 u0 u1"},
		{name: "least conn skips down", balance: BalanceLeastConn, inflight: []int64{0, 9}, down: []bool{true, false}, picks: 2, want: "u1 u1"},
		{name: "least conn skips tried", balance: BalanceLeastConn, inflight: []int64{0, 9}, tried: []int{0}, picks: 1, want: "u1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := max(len(tt.inflight), len(tt.down))
			if n == 0 {
				n = 3
			}
			p := testPool(t, tt.balance, n)
			for i, v := range tt.inflight {
				p.upstreams[i].inflight.Store(v)
			}
			for i, d := range tt.down {
				p.upstreams[i].down.Store(d)
			}
			var tried []*upstream
			for _, i := range tt.tried {
				tried = append(tried, p.upstreams[i])
			}
			var got []string
			for range tt.picks {
				u := p.pick(time.Now(), tried)
				if u == nil {
					got = append(got, "-")
					continue
				}
				got = append(got, strings.TrimPrefix(u.name, "http://"))
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("picks = %q, want %q", g, tt.want)
			}
		})
	}
}

func TestHandlerRoundRobinDistribution(t *testing.T) {
	a, b, c := startUpstream(t, "a", nil), startUpstream(t, "b", nil), startUpstream(t, "c", nil)
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{Upstreams: []string{a.URL, b.URL, c.URL}}}})
	ts := serveProxy(t, h)
	var order []string
	for range 9 {
		order = append(order, doRequest(t, ts, "GET", "/", "").backend)
	}
	if got, want := strings.Join(order, ""), "abcabcabc"; got != want {
		t.Errorf("backends in order %q, want %q", got, want)
	}
	for _, u := range []*testUpstream{a, b, c} {
		if n := u.hits.Load(); n != 3 {
			t.Errorf("upstream %s served %d of 9 requests, want 3", u.name, n)
		}
	}
}

func TestHandlerLeastConn(t *testing.T) {
	entered := make(chan string, 1)
	release := make(chan struct{})
	blockOn := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Block") != "" {
				entered <- name
				<-release
			}
			w.Write([]byte(name))
		}
	}
	a, b := startUpstream(t, "a", blockOn("a")), startUpstream(t, "b", blockOn("b"))
	t.Cleanup(func() { close(release) }) // before the upstreams close
	h := newTestHandler(t, HandlerConfig{Routes: []RouteConfig{{
		Balance: BalanceLeastConn, Upstreams: []string{a.URL, b.URL},
	}}})
	ts := serveProxy(t, h)

	// Hold one request open on one upstream.
	blocked := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest("GET", ts.URL+"/", nil)
		req.Header.Set("X-Block", "1")
		resp, err := ts.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		blocked <- err
	}()
	busy := <-entered
	idle := map[string]string{"a": "b", "b": "a"}[busy]

	for i := range 5 {
		if got := doRequest(t, ts, "GET", "/", ""); got.backend != idle {
			t.Errorf("request %d went to %q, want the idle upstream %q (%q has a request in flight)", i, got.backend, idle, busy)
		}
	}
	if h := h.Health(); h[0].InFlight+h[1].InFlight != 1 {
		t.Errorf("in flight = %d+%d, want 1 in total", h[0].InFlight, h[1].InFlight)
	}
	release <- struct{}{} // let the held request finish; close in cleanup is a no-op for it
	if err := <-blocked; err != nil {
		t.Errorf("held request: %v", err)
	}
}
