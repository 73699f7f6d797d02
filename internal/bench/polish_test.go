package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ratioOf returns the ratio cell of the table row that starts with label.
func ratioOf(t *testing.T, text, label string) (float64, bool) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(label) + `\s.*\s(\d+\.\d+)x$`).FindStringSubmatch(text)
	if m == nil {
		return 0, false
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return f, true
}

// TestRatiosOneDirection: every ratio is resume ÷ full, as the column
// header says, whether the resumed figure is larger (handshakes/s) or
// smaller (latency, bytes received) (#14: latency and bytes were full ÷
// resume).
func TestRatiosOneDirection(t *testing.T) {
	t.Parallel()
	full := syntheticResult(ModeFull, 1000, 0, 4*time.Millisecond)
	res := syntheticResult(ModeResume, 0, 2000, time.Millisecond) // twice the connections in the same time
	var b bytes.Buffer
	if err := WriteText(&b, full, res); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if !strings.Contains(text, "resume ÷ full") {
		t.Fatalf("no ratio header naming its direction:\n%s", text)
	}
	for _, c := range []struct {
		label string
		want  float64
	}{
		{"handshakes/s", res.HandshakesPerSecond() / full.HandshakesPerSecond()},
		{"latency p50", float64(res.Latency.P50) / float64(full.Latency.P50)},
		{"latency max", float64(res.Latency.Max) / float64(full.Latency.Max)},
		{"bytes sent / handshake", 700.0 / 600},
		{"bytes received / handshake", 300.0 / 1400},
	} {
		got, ok := ratioOf(t, text, c.label)
		if !ok || got < c.want-0.01 || got > c.want+0.01 {
			t.Errorf("%s: ratio %.2f (found %v), want resume ÷ full = %.2f\n%s", c.label, got, ok, c.want, text)
		}
	}
}

// TestNothingResumedShowsNoRatio: a resume run in which nothing resumed
// (a store down, tickets off) measured full handshakes; the report says so
// and shows no ratio and no speed-up (#14).
func TestNothingResumedShowsNoRatio(t *testing.T) {
	t.Parallel()
	full := syntheticResult(ModeFull, 1000, 0, 4*time.Millisecond)
	res := syntheticResult(ModeResume, 1100, 0, 3*time.Millisecond)
	var b bytes.Buffer
	if err := WriteText(&b, full, res); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if strings.Contains(text, "÷") || regexp.MustCompile(`\d\.\d\dx`).MatchString(text) {
		t.Errorf("ratios shown although nothing resumed:\n%s", text)
	}
	if !strings.Contains(text, "resume: resumed: none of 1100 connections: every handshake was full") {
		t.Errorf("no plain note that nothing resumed:\n%s", text)
	}
	if sp := Speedup(full, res); sp != 0 {
		t.Errorf("Speedup = %.2f, want 0", sp)
	}
	b.Reset()
	if err := WriteJSON(&b, full, res); err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if _, ok := rep["speedup"]; ok {
		t.Errorf("JSON has a speedup although nothing resumed: %v", rep["speedup"])
	}
}

// TestDeadTargetFailsFast: against a closed port the run stops after a
// bounded number of refused dials with an error that says so, instead of
// counting refusals for the whole duration (#14).
func TestDeadTargetFailsFast(t *testing.T) {
	t.Parallel()
	dead := deadAddr(t)
	for _, mode := range []string{ModeFull, ModeResume} {
		t.Run(mode, func(t *testing.T) {
			r, err := Run(context.Background(), Config{Targets: []string{dead}, Mode: mode, Duration: time.Minute, Concurrency: 4})
			if r != nil || err == nil {
				t.Fatalf("Run = %v, %v; want no result and an error", r, err)
			}
			if !strings.Contains(err.Error(), "refused") {
				t.Fatalf("error %q does not say the connections were refused", err)
			}
			var re *RefusedError
			if mode == ModeFull && (!errors.As(err, &re) || re.Target != dead || re.Dials != DefaultMaxRefused+4) {
				t.Fatalf("error %v, want a *RefusedError for %s after %d dials", err, dead, DefaultMaxRefused+4)
			}
		})
	}
	// The bound is a count: MaxRefused set, exactly that many.
	_, err := Run(context.Background(), Config{Targets: []string{dead}, Conns: 1000, Concurrency: 1, MaxRefused: 3})
	var re *RefusedError
	if !errors.As(err, &re) || re.Dials != 3 {
		t.Fatalf("MaxRefused 3: %v", err)
	}
}
