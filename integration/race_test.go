//go:build race

package integration

// raceEnabled: this test binary is built with -race, so the edgeproxy
// binary under test is too (CI runs go test -race ./...).
const raceEnabled = true
