package demo_test

import (
	"context"
	"fmt"

	"github.com/edgeproxy/edgeproxy/internal/bench"
	"github.com/edgeproxy/edgeproxy/internal/demo"
)

func ExampleStartFleet() {
	f, err := demo.StartFleet(context.Background(), demo.FleetOptions{Nodes: 3})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer f.Close(context.Background())

	// Clients that come back with their session, round robin over the nodes.
	r, err := bench.Run(context.Background(), bench.Config{
		Targets: f.Addrs(), Mode: bench.ModeResume, Conns: 30, ServerName: "localhost", Insecure: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d nodes, mode %s: %d of %d connections resumed\n", len(f.Nodes), f.Mode, r.Resumed, r.Connections)
	// Output: 3 nodes, mode tickets: 30 of 30 connections resumed
}
