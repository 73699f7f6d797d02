// Package buildinfo reports which edgeproxy this is: the version and commit
// stamped at link time, or what the Go toolchain recorded in the binary.
package buildinfo

import (
	"cmp"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Commit are stamped at link time:
//
//	go build -ldflags "-X github.com/edgeproxy/edgeproxy/internal/buildinfo.Version=v1.2.3 -X github.com/edgeproxy/edgeproxy/internal/buildinfo.Commit=abc1234"
//
// If empty, Get falls back to the module version and VCS revision that the
// Go toolchain recorded (runtime/debug.ReadBuildInfo).
var (
	Version string
	Commit  string
)

// Info describes the running binary.
type Info struct {
	// Version is the release version, "devel" when unknown.
	Version string `json:"version"`
	// Commit is the VCS revision, with "-dirty" when the tree was modified;
	// "unknown" when not recorded.
	Commit string `json:"commit"`
	// GoVersion is the toolchain that built the binary, e.g. "go1.26.8".
	GoVersion string `json:"go_version"`
}

// Get returns the binary's build information.
func Get() Info {
	var modVersion, revision string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "(devel)" {
			modVersion = v
		}
		var dirty bool
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if revision != "" && dirty {
			revision += "-dirty"
		}
	}
	return Info{
		Version:   cmp.Or(Version, modVersion, "devel"),
		Commit:    cmp.Or(Commit, revision, "unknown"),
		GoVersion: runtime.Version(),
	}
}

// NewCollector returns the edgeproxy_build_info gauge: always 1, with the
// version, commit and Go version as labels, so that dashboards can join on
// them and see a rollout progress.
func NewCollector() prometheus.Collector {
	i := Get()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "edgeproxy_build_info",
		Help:        "Build information of the running binary; always 1.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "goversion": i.GoVersion},
	}, func() float64 { return 1 })
}
