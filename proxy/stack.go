package proxy

// growStack grows the calling goroutine's stack to what proxying a
// request takes (8 KiB), in one copy while the stack is still shallow.
// The HTTP/2 server runs each request on a new goroutine, which starts
// small and otherwise grew its stack deep in the exchange (parsing the
// upstream's response), copying and adjusting every frame of a deep stack:
// runtime.newstack took 6-9% of the CPU under h2load -c16 -m8, 2.4-2.7%
// with growStack (issue #13). On a goroutine whose stack is already large
// enough it costs one comparison. Its frame is reserved, never written.
//
//go:noinline
func growStack() {
	if stackNever {
		var frame [growStackBytes]byte // reserved in the frame, never written
		useStack(frame[:])
	}
}

// growStackBytes is the frame growStack reserves: with the frames below
// it and the runtime's guard, an 8 KiB stack, past which an exchange
// rarely goes.
const growStackBytes = 5 << 10

var stackNever bool // never set: keeps growStack's frame

//go:noinline
func useStack(b []byte) { stackSink = b[0] }

//lint:ignore U1000 written by useStack, never read: keeps growStack's frame
var stackSink byte
