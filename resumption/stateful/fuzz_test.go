package stateful

import (
	"bytes"
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
)

// fuzzHandle is fixed so that inputs in testdata/fuzz stay
// meaningful: it is the handle under which the fuzzer's values are stored.
func fuzzHandle() []byte {
	h := make([]byte, handleLen)
	for i := range h {
		h[i] = byte(i * 7)
	}
	return h
}

// testSeal returns plaintext sealed under handle in the stored
// value format, as WrapSession writes it.
func testSeal(tb testing.TB, handle, plaintext []byte) []byte {
	tb.Helper()
	aead, err := sessionAEAD(handle[idLen:])
	if err != nil {
		tb.Fatal(err)
	}
	val := make([]byte, headerLen, headerLen+len(plaintext)+tagLen)
	val[0] = formatVersion
	copy(val[1:], bytes.Repeat([]byte{0x5a}, nonceLen))
	ad := additionalData(handle[:idLen])
	return aead.Seal(val, val[1:headerLen], plaintext, ad[:])
}

// FuzzUnwrap feeds arbitrary bytes to UnwrapSession, which must not
// panic and must return either a session or resumption.ErrBad/resumption.ErrMiss: as the identity;
// as the value stored under a known handle; and, since a fuzzer cannot forge
// a GCM tag, sealed as the plaintext of an authentic value, which takes
// arbitrary bytes to ParseSessionState. A session that unwraps must
// re-serialise, wrap and unwrap again unchanged.
func FuzzUnwrap(f *testing.F) {
	s, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	h := fuzzHandle()
	key := s.storeKey(h[:idLen])

	f.Add([]byte(nil))
	f.Add([]byte{formatVersion})
	f.Add(h)
	f.Add(h[:handleLen-1])
	f.Add(append(append([]byte{}, h...), 0))
	for _, v := range tlstest.Versions {
		ss := tlstest.Session(f, v.Version)
		state, err := ss.Bytes()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(state)
		f.Add(testSeal(f, h, state))
		handle := mustWrap(f, s, ss)
		f.Add(handle)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		checkUnwrap(t, s, data)
		put := func(val []byte) {
			if err := s.local.Put(context.Background(), key, append([]byte{flagLocalOnly}, val...), time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		put(data)
		checkUnwrap(t, s, h)
		put(testSeal(t, h, data))
		checkUnwrap(t, s, h)
	})
}

func checkUnwrap(t *testing.T, s *Backend, identity []byte) {
	t.Helper()
	ss := tlstest.UnwrapContract(t, s.UnwrapSession, identity, resumption.ErrBad, resumption.ErrMiss)
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
