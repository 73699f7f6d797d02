// Package secretfile reads files that hold secrets (ticket keys, the KEK,
// store passwords, the admin token) with one rule about who else may read
// them.
//
// A secret file must be a regular file that nobody but its owner can read
// (mode 0600 or 0400), with one exception taken from PostgreSQL's rule for
// ssl_key_file: a file owned by root may also be readable by its group when
// edgeproxy does not run as root. That is how Kubernetes mounts a Secret for
// a non-root container (owner root, group the pod's fsGroup, defaultMode
// 0440), and only root could have given the group that access.
package secretfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// ModeError reports a secret file that others, or its group, may read.
type ModeError struct {
	Path string
	Mode fs.FileMode
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("%q has mode %04o: group and others must have no access (chmod 600 %s; in Kubernetes a root-owned Secret with defaultMode 0440 and the pod's fsGroup also works)",
		e.Path, uint32(e.Mode.Perm()), e.Path)
}

// Read reads the secret file at path, at most limit bytes, refusing a file
// that is not regular, that Allowed refuses (a *ModeError), or that is
// larger than limit. The mode is checked on the open file, so a swap between
// the check and the read cannot slip another file in. The caller should
// clear the data when done. Errors name the path, not a config field: the
// caller knows the field.
func Read(path string, limit int64) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%q is not a regular file (mode %s)", path, fi.Mode())
	}
	owner := -1
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		owner = int(st.Uid)
	}
	if !Allowed(fi.Mode().Perm(), owner, os.Getuid()) {
		return nil, nil, &ModeError{Path: path, Mode: fi.Mode()}
	}
	if fi.Size() > limit {
		return nil, nil, fmt.Errorf("%q is %d bytes, more than the %d allowed", path, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		clear(data)
		return nil, nil, fmt.Errorf("reading %q: %w", path, err)
	}
	if int64(len(data)) > limit {
		clear(data)
		return nil, nil, fmt.Errorf("%q is more than the %d bytes allowed", path, limit)
	}
	return data, fi, nil
}

// Allowed reports whether a secret file with permission bits perm, owned by
// user owner (-1 if unknown), may be read by a process running as user self.
func Allowed(perm fs.FileMode, owner, self int) bool {
	if perm&0o077 == 0 {
		return true
	}
	// Group read only (no group write or execute, nothing for others), the
	// file owned by root, and edgeproxy not root: a Kubernetes Secret.
	return perm&0o037 == 0 && owner == 0 && self != 0
}

// ReadString reads a one-line secret (a password, a token) with Read's rule:
// the file's content less one trailing newline, which must not be empty.
func ReadString(path string, limit int64) (string, error) {
	b, _, err := Read(path, limit)
	if err != nil {
		return "", err
	}
	defer clear(b)
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%q is empty", path)
	}
	return s, nil
}
