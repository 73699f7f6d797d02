package bench

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

// syntheticResult builds a Result without a run, for report tests.
func syntheticResult(mode string, full, resumed int64, base time.Duration) *Result {
	r := &Result{
		Mode: mode, TLSVersion: 0x0304, Targets: []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}, Concurrency: 8,
		Elapsed: 2 * time.Second, Full: full, Resumed: resumed, Connections: full + resumed,
		ErrorsByKind: map[string]int64{}, ErrorExamples: map[string]string{},
		ClientCPU: time.Second, CPUs: 2,
	}
	var h histogram
	for i := 0; i < 1000; i++ {
		h.Record(base + time.Duration(i)*base/500)
	}
	r.Latency = latencyOf(&h)
	r.FullStats = Class{Handshakes: full, BytesSent: 600, BytesReceived: 1400, Latency: r.Latency}
	r.ResumedStats = Class{Handshakes: resumed, BytesSent: 700, BytesReceived: 300, Latency: r.Latency}
	for _, p := range curvePercentiles {
		r.Curve = append(r.Curve, CurvePoint{Percentile: p, Latency: h.Quantile(p / 100)})
	}
	return r
}

// svgIDs parses the SVG with encoding/xml and returns the id attributes of
// its elements and its text.
func svgIDs(t *testing.T, data []byte) (map[string]string, string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	ids := map[string]string{}
	var text strings.Builder
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, data)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Space + " " + tok.Name.Local
			}
			for _, a := range tok.Attr {
				if a.Name.Local == "id" {
					ids[a.Value] = tok.Name.Local
				}
			}
		case xml.CharData:
			text.Write(tok)
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Fatalf("root element %q, want svg in the SVG namespace", root)
	}
	return ids, text.String()
}

func TestSVGIsWellFormedWithSeries(t *testing.T) {
	full := syntheticResult(ModeFull, 2000, 0, 3*time.Millisecond)
	resume := syntheticResult(ModeResume, 2, 5998, time.Millisecond)
	resume.Targets = []string{`<a&b>:1`} // must be escaped
	var b bytes.Buffer
	if err := WriteSVG(&b, full, resume); err != nil {
		t.Fatal(err)
	}
	ids, text := svgIDs(t, b.Bytes())
	for _, mode := range []string{"full", "resume"} {
		for _, id := range []string{"throughput-", "latency-", "bytes-sent-", "bytes-received-", "legend-"} {
			if _, ok := ids[id+mode]; !ok {
				t.Errorf("no element with id %q; ids: %v", id+mode, ids)
			}
		}
	}
	if _, ok := ids["speedup"]; !ok || !strings.Contains(text, "3.00x with resumption") {
		t.Errorf("no speed-up annotation (want 3.00x): %q", text)
	}
	for _, want := range []string{"Handshakes per second", "Bytes per handshake", "Handshake latency", "p99.9", "1000"} {
		if !strings.Contains(text, want) {
			t.Errorf("chart text lacks %q", want)
		}
	}
	if strings.Count(b.String(), "<polyline") != 2 {
		t.Errorf("want one latency line per run")
	}
}

func TestSVGOneSeries(t *testing.T) {
	var b bytes.Buffer
	if err := WriteSVG(&b, syntheticResult(ModeResume, 0, 10, time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	ids, _ := svgIDs(t, b.Bytes())
	if _, ok := ids["throughput-resume"]; !ok {
		t.Fatalf("ids %v", ids)
	}
	if _, ok := ids["speedup"]; ok {
		t.Fatal("speed-up drawn for a single run")
	}
	if err := WriteSVG(&b); err == nil {
		t.Fatal("WriteSVG with no result: want an error")
	}
}
