package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/edgeproxy/edgeproxy/proxy"
)

// Chart geometry, in SVG user units.
const (
	chartW     = 1040
	chartH     = 470
	panelTop   = 80
	panelH     = 290
	panelBot   = panelTop + panelH
	barPanelX  = 70
	barPanelW  = 200
	bytePanelX = 350
	bytePanelW = 220
	latPanelX  = 650
	latPanelW  = 350
)

// seriesColor gives full handshakes a warm colour and resumed ones a cool
// one, whatever order the results come in.
func seriesColor(mode string, i int) string {
	switch mode {
	case ModeFull:
		return "#c0392b"
	case ModeResume:
		return "#2471a3"
	}
	return []string{"#7d3c98", "#229954", "#b7950b"}[i%3]
}

// seriesID names a result's series in element ids: its mode, made unique.
func seriesIDs(results []*Result) []string {
	ids := make([]string, len(results))
	seen := map[string]int{}
	for i, r := range results {
		base := r.Mode
		if base == "" {
			base = "run"
		}
		id := base
		if n := seen[base]; n > 0 {
			id = fmt.Sprintf("%s-%d", base, n+1)
		}
		seen[base]++
		ids[i] = id
	}
	return ids
}

// WriteSVG draws the results as a standalone SVG image: handshakes per
// second as bars (with the speed-up of the second run over the first), bytes
// on the wire per handshake, and the latency distribution as one line per
// run over percentiles (min, p50, p90, p99, p99.9, max) on a log scale.
// Element ids name each series: throughput-MODE, bytes-sent-MODE,
// bytes-received-MODE, latency-MODE.
func WriteSVG(w io.Writer, results ...*Result) error {
	if len(results) == 0 {
		return fmt.Errorf("bench: no results to chart")
	}
	ids := seriesIDs(results)
	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	r0 := results[0]
	p(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="Helvetica, Arial, sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	p(`<rect width="100%%" height="100%%" fill="#ffffff"/>` + "\n")
	title := "edgeproxy bench: full vs resumed TLS handshakes"
	if len(results) == 1 {
		title = "edgeproxy bench: " + r0.Mode + " TLS handshakes"
	}
	p(`<text x="%d" y="28" font-size="18" font-weight="bold">%s</text>`+"\n", barPanelX-40, esc(title))
	sub := fmt.Sprintf("TLS %s, %s, concurrency %d, %s per run", proxy.VersionName(r0.TLSVersion), targetsText(r0.Targets), r0.Concurrency, round(r0.Elapsed))
	p(`<text x="%d" y="48" fill="#555555">%s</text>`+"\n", barPanelX-40, esc(sub))

	// Legend.
	lx := chartW - 40
	for i := len(results) - 1; i >= 0; i-- {
		r := results[i]
		label := fmt.Sprintf("%s (%s resumed)", r.Mode, percent(r.ResumedRatio()))
		lx -= 14 + 7*len(label) + 20
		p(`<g id="legend-%s"><rect x="%d" y="38" width="12" height="12" fill="%s"/><text x="%d" y="48">%s</text></g>`+"\n",
			esc(ids[i]), lx, seriesColor(r.Mode, i), lx+16, esc(label))
	}

	writeThroughput(&b, results, ids)
	writeBytes(&b, results, ids)
	writeLatency(&b, results, ids)

	p(`<text x="%d" y="%d" fill="#777777" font-size="11">%s</text>`+"\n", barPanelX-40, chartH-14,
		esc(fmt.Sprintf("latency: client side, TCP connected to handshake done; bytes: TCP payload up to the end of the handshake; client CPU %s", cpuNote(results))))
	p("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

func cpuNote(results []*Result) string {
	parts := make([]string, len(results))
	for i, r := range results {
		parts[i] = fmt.Sprintf("%s %.0f%% of %d CPUs", r.Mode, 100*r.CPUShare(), r.CPUs)
	}
	return strings.Join(parts, ", ")
}

func panelFrame(b *bytes.Buffer, x, w int, title string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", x, panelTop-14, esc(title))
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333333"/>`+"\n", x, panelBot, x+w, panelBot)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333333"/>`+"\n", x, panelTop, x, panelBot)
}

// yTicks draws horizontal grid lines and labels for a linear axis 0..top.
func yTicks(b *bytes.Buffer, x, w int, top float64, format string) {
	step := niceStep(top / 5)
	for v := step; v <= top*1.0001; v += step {
		y := float64(panelBot) - v/top*panelH
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>`+"\n", x, y, x+w, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555555">%s</text>`+"\n", x-4, y+4, esc(fmt.Sprintf(format, v)))
	}
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= v {
			return m * mag
		}
	}
	return 10 * mag
}

func writeThroughput(b *bytes.Buffer, results []*Result, ids []string) {
	panelFrame(b, barPanelX, barPanelW, "Handshakes per second")
	top := 0.0
	for _, r := range results {
		top = math.Max(top, r.HandshakesPerSecond())
	}
	top = niceCeil(top)
	yTicks(b, barPanelX, barPanelW, top, "%.0f")
	slot := float64(barPanelW) / float64(len(results))
	bw := math.Min(slot*0.6, 70)
	for i, r := range results {
		v := r.HandshakesPerSecond()
		h := v / top * panelH
		x := float64(barPanelX) + slot*float64(i) + (slot-bw)/2
		fmt.Fprintf(b, `<g id="throughput-%s"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
			esc(ids[i]), x, float64(panelBot)-h, bw, h, seriesColor(r.Mode, i), esc(fmt.Sprintf("%s: %.1f handshakes/s", r.Mode, v)))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x+bw/2, float64(panelBot)-h-5, esc(fmt.Sprintf("%.0f", v)))
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text></g>`+"\n", x+bw/2, panelBot+16, esc(r.Mode))
	}
	if len(results) == 2 {
		if s := Speedup(results[0], results[1]); s > 0 {
			fmt.Fprintf(b, `<text id="speedup" x="%d" y="%d" text-anchor="middle" font-weight="bold">%s</text>`+"\n",
				barPanelX+barPanelW/2, panelBot+36, esc(fmt.Sprintf("%.2fx with resumption", s)))
		}
	}
}

func writeBytes(b *bytes.Buffer, results []*Result, ids []string) {
	panelFrame(b, bytePanelX, bytePanelW, "Bytes per handshake")
	top := 0.0
	for _, r := range results {
		top = math.Max(top, math.Max(bytesPer(r, false), bytesPer(r, true)))
	}
	top = niceCeil(top)
	yTicks(b, bytePanelX, bytePanelW, top, "%.0f")
	groups := []struct {
		name     string
		received bool
	}{{"sent", false}, {"received", true}}
	slot := float64(bytePanelW) / float64(len(groups))
	bw := math.Min(slot*0.7/float64(len(results)), 36)
	for g, grp := range groups {
		x0 := float64(bytePanelX) + slot*float64(g) + (slot-bw*float64(len(results)))/2
		for i, r := range results {
			v := bytesPer(r, grp.received)
			h := v / top * panelH
			x := x0 + bw*float64(i)
			fmt.Fprintf(b, `<g id="bytes-%s-%s"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
				grp.name, esc(ids[i]), x, float64(panelBot)-h, bw-2, h, seriesColor(r.Mode, i), esc(fmt.Sprintf("%s: %.0f bytes %s", r.Mode, v, grp.name)))
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text></g>`+"\n", x+bw/2-1, float64(panelBot)-h-4, esc(fmt.Sprintf("%.0f", v)))
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(bytePanelX)+slot*(float64(g)+0.5), panelBot+16, grp.name)
	}
}

// latencyPoints are the percentiles the latency lines go through, with the
// x position on a "nines" scale: -log10(1-p).
var latencyPoints = []struct {
	label string
	pct   float64
	x     float64
}{
	{"min", 0, 0}, {"p50", 50, math.Log10(2)}, {"p90", 90, 1}, {"p99", 99, 2}, {"p99.9", 99.9, 3}, {"max", 100, 3.5},
}

// nines places a percentile on the latency chart's x axis: -log10(1-p),
// so p90, p99 and p99.9 are evenly spaced; the maximum comes last.
func nines(pct float64) float64 {
	if pct >= 100 {
		return latencyPoints[len(latencyPoints)-1].x
	}
	return math.Min(-math.Log10(1-pct/100), 3)
}

func writeLatency(b *bytes.Buffer, results []*Result, ids []string) {
	panelFrame(b, latPanelX, latPanelW, "Handshake latency by percentile (ms, log scale)")
	lo, hi := math.Inf(1), 0.0
	for _, r := range results {
		for _, c := range r.Curve {
			if v := float64(c.Latency) / 1e6; v > 0 {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if hi == 0 {
		lo, hi = 0.1, 1
	}
	minE, maxE := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if maxE == minE {
		maxE++
	}
	y := func(msv float64) float64 {
		if msv <= 0 {
			msv = lo
		}
		return float64(panelBot) - (math.Log10(msv)-minE)/(maxE-minE)*panelH
	}
	xMax := latencyPoints[len(latencyPoints)-1].x
	x := func(n float64) float64 { return float64(latPanelX) + 10 + n/xMax*(latPanelW-20) }
	for e := minE; e <= maxE; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if e == maxE && m > 1 {
				break
			}
			yy := y(v)
			fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e5e5e5"/>`+"\n", latPanelX, yy, latPanelX+latPanelW, yy)
			fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" fill="#555555">%s</text>`+"\n", latPanelX-4, yy+4, esc(trimFloat(v)))
		}
	}
	for _, lp := range latencyPoints {
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(lp.x), panelBot+16, lp.label)
	}
	for i, r := range results {
		if len(r.Curve) == 0 {
			continue
		}
		var pts []string
		var dots strings.Builder
		for _, c := range r.Curve {
			v := float64(c.Latency) / 1e6
			px, py := x(nines(c.Percentile)), y(v)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
			label := fmt.Sprintf("p%g", c.Percentile)
			switch c.Percentile {
			case 0:
				label = "min"
			case 100:
				label = "max"
			}
			fmt.Fprintf(&dots, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s</title></circle>`, px, py, seriesColor(r.Mode, i),
				esc(fmt.Sprintf("%s %s: %.3f ms", r.Mode, label, v)))
		}
		fmt.Fprintf(b, `<g id="latency-%s"><polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>%s</g>`+"\n",
			esc(ids[i]), strings.Join(pts, " "), seriesColor(r.Mode, i), dots.String())
	}
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// niceCeil rounds v up to a value with one or two significant digits
// (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10 times a power of ten).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*mag >= v {
			return m * mag
		}
	}
	return 10 * mag
}

// esc escapes s for XML text and attribute values.
func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
