package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTick = 10 * time.Millisecond

// usage is what /proc says about a process tree at one moment.
type usage struct {
	// CPU is utime+stime summed over the processes.
	CPU time.Duration
	// RSS and Peak are VmRSS and VmHWM summed over the processes, in bytes.
	RSS, Peak int64
	// Procs is how many processes were read.
	Procs int
}

// tree returns root and all its descendants, read from /proc.
func tree(root int) []int {
	children := map[int][]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

type stat struct {
	ppid int
	cpu  time.Duration
}

// readStat parses /proc/PID/stat: the fields after the command name, which
// is in parentheses and may itself hold spaces and parentheses.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("stat %q: no command name", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return stat{}, fmt.Errorf("stat %q: %d fields after the name, want at least 13", b, len(f))
	}
	ppid, err1 := strconv.Atoi(f[1])
	ut, err2 := strconv.ParseInt(f[11], 10, 64)
	st, err3 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return stat{}, fmt.Errorf("stat %q: bad ppid, utime or stime", b)
	}
	return stat{ppid: ppid, cpu: time.Duration(ut+st) * clockTick}, nil
}

// statusKB returns the kB values of the named lines of /proc/PID/status.
func statusKB(pid int, names ...string) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, n := range names {
			if k == n {
				num, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				out[n] = num
			}
		}
	}
	return out, sc.Err()
}

// sample reads CPU time and memory of root's process tree.
func sample(root int) usage {
	var u usage
	for _, pid := range tree(root) {
		st, err := readStat(pid)
		if err != nil {
			continue // exited between the listing and the read
		}
		m, err := statusKB(pid, "VmRSS", "VmHWM")
		if err != nil {
			continue
		}
		u.CPU += st.cpu
		u.RSS += m["VmRSS"] << 10
		u.Peak += m["VmHWM"] << 10
		u.Procs++
	}
	return u
}

// resetPeak resets VmHWM of root's process tree to the current RSS (writing
// 5 to clear_refs, Linux 4.0+), so that the next sample's Peak covers only
// what ran in between. It reports whether every process was reset.
func resetPeak(root int) bool {
	ok := true
	for _, pid := range tree(root) {
		if err := os.WriteFile(filepath.Join("/proc", strconv.Itoa(pid), "clear_refs"), []byte("5"), 0); err != nil {
			ok = false
		}
	}
	return ok
}
