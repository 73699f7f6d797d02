package main

import (
	"net"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/demo"
)

// TestDemoHelpListsEveryMode: the help names every mode the demo runs
// (#14: it said "tickets or off").
func TestDemoHelpListsEveryMode(t *testing.T) {
	t.Parallel()
	_, o, _ := runCmd(t, "demo", "-h") // help goes to stdout
	for _, m := range demo.Modes {
		if !strings.Contains(o, m) {
			t.Errorf("demo -h does not mention mode %s:\n%s", m, o)
		}
	}
	if strings.Contains(o, "tickets or off") {
		t.Errorf("demo -h still says tickets or off:\n%s", o)
	}
}

// TestBenchDeadTargetFailsFast: bench against a closed port ends with an
// error naming the refusals, not after --duration.
func TestBenchDeadTargetFailsFast(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	code, o, e := runCmd(t, "bench", "--targets", dead, "--mode", "full", "--duration", "10m", "--quiet")
	if code != 1 || !strings.Contains(e, "refused, the last by "+dead) || o != "" {
		t.Fatalf("code %d, stdout %q, stderr %q; want exit 1 and the refusal named", code, o, e)
	}
}
