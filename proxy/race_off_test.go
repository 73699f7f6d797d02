//go:build !race

package proxy

// raceEnabled reports whether tests run under -race, where sync.Pool drops
// part of what is put back and allocation counts are higher.
const raceEnabled = false
