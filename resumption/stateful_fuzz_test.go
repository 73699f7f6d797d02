package resumption

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"
)

// statefulFuzzHandle is fixed so that inputs in testdata/fuzz stay
// meaningful: it is the handle under which the fuzzer's values are stored.
func statefulFuzzHandle() []byte {
	h := make([]byte, statefulHandleLen)
	for i := range h {
		h[i] = byte(i * 7)
	}
	return h
}

// statefulTestSeal returns plaintext sealed under handle in the stored
// value format, as WrapSession writes it.
func statefulTestSeal(tb testing.TB, handle, plaintext []byte) []byte {
	tb.Helper()
	aead, err := statefulAEAD(handle[statefulIDLen:])
	if err != nil {
		tb.Fatal(err)
	}
	val := make([]byte, statefulHeaderLen, statefulHeaderLen+len(plaintext)+statefulTagLen)
	val[0] = statefulVersion
	copy(val[1:], bytes.Repeat([]byte{0x5a}, statefulNonceLen))
	ad := statefulAD(handle[:statefulIDLen])
	return aead.Seal(val, val[1:statefulHeaderLen], plaintext, ad[:])
}

// FuzzStatefulUnwrap feeds arbitrary bytes to UnwrapSession, which must not
// panic and must return either a session or ErrBad/ErrMiss: as the identity;
// as the value stored under a known handle; and, since a fuzzer cannot forge
// a GCM tag, sealed as the plaintext of an authentic value, which takes
// arbitrary bytes to ParseSessionState. A session that unwraps must
// re-serialise, wrap and unwrap again unchanged.
func FuzzStatefulUnwrap(f *testing.F) {
	s, err := NewStateful(StatefulConfig{})
	if err != nil {
		f.Fatal(err)
	}
	h := statefulFuzzHandle()
	key := s.storeKey(h[:statefulIDLen])

	f.Add([]byte(nil))
	f.Add([]byte{statefulVersion})
	f.Add(h)
	f.Add(h[:statefulHandleLen-1])
	f.Add(append(append([]byte{}, h...), 0))
	for _, v := range ticketTestVersions {
		ss := ticketTestSession(f, v.version)
		state, err := ss.Bytes()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(state)
		f.Add(statefulTestSeal(f, h, state))
		handle := statefulMustWrap(f, s, ss)
		f.Add(handle)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		checkStatefulUnwrap(t, s, data)
		put := func(val []byte) {
			if err := s.local.Put(context.Background(), key, append([]byte{statefulLocalOnly}, val...), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		put(data)
		checkStatefulUnwrap(t, s, h)
		put(statefulTestSeal(t, h, data))
		checkStatefulUnwrap(t, s, h)
	})
}

func checkStatefulUnwrap(t *testing.T, s *Stateful, identity []byte) {
	t.Helper()
	ss := unwrapContract(t, s, identity)
	if ss == nil {
		return
	}
	state, err := ss.Bytes()
	if err != nil {
		t.Fatalf("an unwrapped session does not serialise: %v", err)
	}
	handle, err := s.WrapSession(tls.ConnectionState{}, ss)
	if err != nil {
		t.Fatalf("an unwrapped session does not wrap: %v", err)
	}
	back, err := s.UnwrapSession(handle, tls.ConnectionState{})
	if err != nil {
		t.Fatalf("a rewrapped session does not unwrap: %v", err)
	}
	if b, err := back.Bytes(); err != nil || !bytes.Equal(b, state) {
		t.Fatalf("a rewrapped session changed (%v)", err)
	}
}
