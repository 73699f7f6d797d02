package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// IsTerminal reports whether w is a character device (a terminal), by
// os.File.Stat: enough to choose between a redrawn bar and plain lines.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// PlainEvery is how often ProgressWriter prints a plain line when the
// output is not a terminal.
const PlainEvery = time.Second

// barWidth is the number of cells of the progress bar.
const barWidth = 24

// ProgressWriter renders Progress snapshots: on a terminal one line redrawn
// in place with a bar, otherwise a plain line at most every PlainEvery and
// at the end. Its Update method fits Config.Progress. It is not safe for
// concurrent use (Run calls Progress from one goroutine).
type ProgressWriter struct {
	// W receives the output, usually standard error.
	W io.Writer
	// TTY selects the redrawn bar.
	TTY bool
	// Label starts every line, for example the mode.
	Label string

	lastPlain time.Duration
	printed   bool
}

// Update renders one snapshot.
func (p *ProgressWriter) Update(pr Progress) {
	frac := 0.0
	switch {
	case pr.Conns > 0:
		frac = float64(pr.Done) / float64(pr.Conns)
	case pr.Duration > 0:
		frac = pr.Elapsed.Seconds() / pr.Duration.Seconds()
	}
	if pr.Final {
		frac = 1
	}
	frac = min(max(frac, 0), 1)
	rate := 0.0
	if pr.Elapsed > 0 {
		rate = float64(pr.Done-pr.Errors) / pr.Elapsed.Seconds()
	}
	resumed := 0.0
	if ok := pr.Done - pr.Errors; ok > 0 {
		resumed = float64(pr.Resumed) / float64(ok)
	}
	stats := fmt.Sprintf("%5.1fs %8d conns %9.1f/s  resumed %s  errors %d",
		pr.Elapsed.Seconds(), pr.Done, rate, percent(resumed), pr.Errors)
	if p.TTY {
		n := int(frac * barWidth)
		bar := strings.Repeat("#", n) + strings.Repeat(".", barWidth-n)
		fmt.Fprintf(p.W, "\r\033[K%s [%s] %3.0f%% %s", p.Label, bar, 100*frac, stats)
		if pr.Final {
			fmt.Fprintln(p.W)
		}
		return
	}
	if !pr.Final && p.printed && pr.Elapsed-p.lastPlain < PlainEvery {
		return
	}
	p.printed, p.lastPlain = true, pr.Elapsed
	state := "running"
	if pr.Final {
		state = "done"
	}
	fmt.Fprintf(p.W, "%s: %s %s\n", p.Label, state, stats)
}
