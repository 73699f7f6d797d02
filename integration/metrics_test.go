package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// adminClient reaches the nodes' admin listeners. No keep-alive: nodes
// restart on the same port.
var adminClient = &http.Client{
	Timeout:   3 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// sample is one series of a Prometheus text exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// metrics is a scrape of a node's /metrics.
type metrics []sample

// scrape fetches and parses http://addr/metrics.
func scrape(addr string) (metrics, error) {
	resp, err := adminClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("GET /metrics: %s: %s", resp.Status, b)
	}
	var ms metrics
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("parsing %q: %w", line, err)
		}
		ms = append(ms, s)
	}
	return ms, sc.Err()
}

// parseSample parses `name{k="v",...} value` or `name value`.
func parseSample(line string) (sample, error) {
	s := sample{labels: map[string]string{}}
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil {
		return s, err
	}
	s.value = v
	series := strings.TrimSpace(line[:sp])
	br := strings.IndexByte(series, '{')
	if br < 0 {
		s.name = series
		return s, nil
	}
	s.name = series[:br]
	rest := strings.TrimSuffix(series[br+1:], "}")
	for rest != "" {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
			return s, fmt.Errorf("bad labels %q", rest)
		}
		key := rest[:eq]
		rest = rest[eq+2:]
		var val strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[i])
				}
				continue
			}
			val.WriteByte(rest[i])
		}
		if i == len(rest) {
			return s, fmt.Errorf("unterminated label value")
		}
		s.labels[key] = val.String()
		rest = strings.TrimPrefix(rest[i+1:], ",")
	}
	return s, nil
}

// sum adds the values of the series called name whose labels include the
// given key, value pairs.
func (ms metrics) sum(name string, kv ...string) float64 {
	total := 0.0
	for _, s := range ms {
		if s.name == name && s.match(kv) {
			total += s.value
		}
	}
	return total
}

// has reports whether a series called name with those labels exists.
func (ms metrics) has(name string, kv ...string) bool {
	for _, s := range ms {
		if s.name == name && s.match(kv) {
			return true
		}
	}
	return false
}

func (s sample) match(kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		if s.labels[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}
