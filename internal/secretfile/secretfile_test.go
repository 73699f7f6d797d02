package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		perm        fs.FileMode
		owner, self int
		want        bool
	}{
		{0o600, 1000, 1000, true},
		{0o400, 0, 0, true},
		{0o644, 1000, 1000, false},
		{0o604, 1000, 1000, false},
		{0o640, 1000, 1000, false}, // group-readable, not root's
		{0o640, 0, 0, false},       // root reading a group-readable file of root's
		{0o440, 0, 65532, true},    // a Kubernetes Secret with fsGroup
		{0o640, 0, 65532, true},
		{0o660, 0, 65532, false}, // group may write
		{0o444, 0, 65532, false}, // others may read
		{0o640, -1, 65532, false},
	}
	for _, tt := range tests {
		if got := Allowed(tt.perm, tt.owner, tt.self); got != tt.want {
			t.Errorf("Allowed(%04o, owner %d, self %d) = %v, want %v", tt.perm, tt.owner, tt.self, got, tt.want)
		}
	}
}

func TestRead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, data string, mode fs.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok", "secret", 0o600)
	if data, _, err := Read(ok, 64); err != nil || string(data) != "secret" {
		t.Fatalf("Read(0600) = %q, %v", data, err)
	}
	open := write("open", "secret", 0o644)
	var me *ModeError
	if _, _, err := Read(open, 64); !errors.As(err, &me) || me.Mode.Perm() != 0o644 {
		t.Fatalf("Read(0644) = %v, want a *ModeError with mode 0644", err)
	}
	if _, _, err := Read(ok, 3); err == nil {
		t.Fatal("Read past the limit succeeded")
	}
	if _, _, err := Read(dir, 64); err == nil {
		t.Fatal("Read of a directory succeeded")
	}
}
