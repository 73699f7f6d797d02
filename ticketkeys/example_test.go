package ticketkeys_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// A single node: keys generated in memory, rotated every hour, each kept two
// more hours so that tickets of a two-hour session lifetime still open.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	holder := ticketkeys.NewHolder(ticketkeys.HolderConfig{})
	defer holder.Close() // after the TLS server has stopped
	src, err := ticketkeys.NewGenerateSource(holder, ticketkeys.GenerateConfig{
		RotateEvery: time.Hour,
		Lifetime:    2 * time.Hour,
		Now:         clock,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := src.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer src.Close()

	first := holder.Ring().Current()
	for range 4 {
		now = now.Add(time.Hour)
		if err := src.Rotate(); err != nil { // the timer does this in production
			log.Fatal(err)
		}
	}
	ring := holder.Ring() // the handshake path: one atomic load
	fmt.Println("keys in ring:", ring.Len())
	fmt.Println("current key age:", now.Sub(ring.Current().Created))
	fmt.Println("first key still opens:", ring.Lookup(first.Name) != nil)
	// Output:
	// keys in ring: 3
	// current key age: 0s
	// first key still opens: false
}

// What `edgeproxy keys gen` and `edgeproxy keys inspect` do.
func ExampleInspectFile() {
	dir, err := os.MkdirTemp("", "keys")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "ticket.key")

	// Deterministic bytes for the example; pass nil for crypto/rand.
	seq := make([]byte, 2*ticketkeys.KeySize80)
	for i := range seq {
		seq[i] = byte(i)
	}
	rnd := bytes.NewReader(seq)
	if err := ticketkeys.WriteKeyFile(path, ticketkeys.FormatBase64, ticketkeys.KeySize80, 2, rnd); err != nil {
		log.Fatal(err)
	}
	infos, err := ticketkeys.InspectFile(path)
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range infos {
		fmt.Println(k.Index, k.Name, k.Size, k.Sealing)
	}
	// Output:
	// 0 000102030405060708090a0b0c0d0e0f 80 true
	// 1 505152535455565758595a5b5c5d5e5f 80 false
}
