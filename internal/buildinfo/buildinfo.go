// Package buildinfo says which build is running.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/bwmarrin/discordgo"
	"github.com/prometheus/client_golang/prometheus"
)

// Version is set at link time (-ldflags -X); otherwise the module version
// or VCS revision Go recorded, or "dev".
var Version = ""

// Get returns the version, the Go version and discordgo's version.
func Get() (version, goVersion, discordgoVersion string) {
	version = Version
	if version == "" {
		version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok {
			if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				version = bi.Main.Version
			}
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && version == "dev" && len(s.Value) >= 12 {
					version = "dev-" + s.Value[:12]
				}
			}
		}
	}
	return version, runtime.Version(), discordgo.VERSION
}

// Collector exports shardvisor_build_info.
func Collector() prometheus.Collector {
	v, g, d := Get()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "shardvisor_build_info",
		Help:        "Always 1; the labels say which build of shardvisor runs.",
		ConstLabels: prometheus.Labels{"version": v, "go_version": g, "discordgo_version": d},
	}, func() float64 { return 1 })
}
