package metrics

import (
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
)

// userHZ is the kernel's clock tick for /proc/<pid>/stat's times, the
// constant procfs and client_golang's process collector use too.
const userHZ = 100

// Processes is one collector for the CPU, memory and file descriptors of
// every cluster process, read from procfs: the series client_golang's
// process collector would export for each (shardvisor_cluster_process_*),
// labelled cluster_id, at a fraction of its cost per scrape. The kernel's
// boot time is read once and each process's limits once per pid (a limit
// changed with prlimit on a running cluster shows after its next restart);
// the network counters, which belong to the network namespace and not to
// the process, are read once per namespace and scrape. A process that is
// gone by the time it is read is left out of the scrape.
type Processes struct {
	pids func() map[int]int // cluster id to pid, of the running processes
	fs   procfs.FS
	err  error // from opening procfs: nothing is collected

	bootOnce sync.Once
	boot     float64 // the kernel's boot time, seconds since the epoch
	bootErr  error

	mu     sync.Mutex
	limits map[int]procfs.ProcLimits // by pid

	cpu, fds, maxFDs, vsize, maxVsize, rss, start, rx, tx *prometheus.Desc
}

// NewProcesses returns the collector; pids lists, at each scrape, the
// pid of every cluster whose process runs, by cluster id.
func NewProcesses(pids func() map[int]int) *Processes {
	fs, err := procfs.NewDefaultFS()
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("shardvisor_cluster_process_"+name, help, []string{Label}, nil)
	}
	return &Processes{pids: pids, fs: fs, err: err, limits: map[int]procfs.ProcLimits{},
		cpu:      desc("cpu_seconds_total", "Total user and system CPU time spent in seconds."),
		fds:      desc("open_fds", "Number of open file descriptors."),
		maxFDs:   desc("max_fds", "Maximum number of open file descriptors."),
		vsize:    desc("virtual_memory_bytes", "Virtual memory size in bytes."),
		maxVsize: desc("virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes."),
		rss:      desc("resident_memory_bytes", "Resident memory size in bytes."),
		start:    desc("start_time_seconds", "Start time of the process since unix epoch in seconds."),
		rx:       desc("network_receive_bytes_total", "Number of bytes received by the process over the network."),
		tx:       desc("network_transmit_bytes_total", "Number of bytes sent by the process over the network."),
	}
}

// Describe implements prometheus.Collector.
func (p *Processes) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{p.cpu, p.fds, p.maxFDs, p.vsize, p.maxVsize, p.rss, p.start, p.rx, p.tx} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (p *Processes) Collect(ch chan<- prometheus.Metric) {
	if p.err != nil {
		return
	}
	pids := p.pids()
	ids := make([]int, 0, len(pids))
	for id := range pids {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	type traffic struct{ rx, tx float64 }
	byNamespace := map[string]traffic{}
	for _, id := range ids {
		pid, label := pids[id], strconv.Itoa(id)
		proc, err := p.fs.Proc(pid)
		if err != nil {
			continue
		}
		stat, err := proc.Stat()
		if err != nil {
			continue // gone
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, label)
		}
		ch <- prometheus.MustNewConstMetric(p.cpu, prometheus.CounterValue, stat.CPUTime(), label)
		gauge(p.vsize, float64(stat.VirtualMemory()))
		gauge(p.rss, float64(stat.ResidentMemory()))
		if boot, err := p.bootTime(); err == nil {
			gauge(p.start, boot+float64(stat.Starttime)/userHZ)
		}
		if n, err := proc.FileDescriptorsLen(); err == nil {
			gauge(p.fds, float64(n))
		}
		if l, ok := p.limitsOf(pid, proc); ok {
			gauge(p.maxFDs, float64(l.OpenFiles))
			gauge(p.maxVsize, float64(l.AddressSpace))
		}
		ns, _ := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net")
		t, ok := byNamespace[ns]
		if !ok || ns == "" {
			n, err := proc.Netstat()
			if err != nil {
				continue
			}
			if n.InOctets != nil {
				t.rx = *n.InOctets
			}
			if n.OutOctets != nil {
				t.tx = *n.OutOctets
			}
			byNamespace[ns] = t
		}
		ch <- prometheus.MustNewConstMetric(p.rx, prometheus.CounterValue, t.rx, label)
		ch <- prometheus.MustNewConstMetric(p.tx, prometheus.CounterValue, t.tx, label)
	}
	p.forget(pids)
}

func (p *Processes) bootTime() (float64, error) {
	p.bootOnce.Do(func() {
		st, err := p.fs.Stat()
		p.boot, p.bootErr = float64(st.BootTime), err
	})
	return p.boot, p.bootErr
}

// limitsOf returns pid's limits, read once per pid.
func (p *Processes) limitsOf(pid int, proc procfs.Proc) (procfs.ProcLimits, bool) {
	p.mu.Lock()
	l, ok := p.limits[pid]
	p.mu.Unlock()
	if ok {
		return l, true
	}
	l, err := proc.Limits()
	if err != nil {
		return l, false
	}
	p.mu.Lock()
	p.limits[pid] = l
	p.mu.Unlock()
	return l, true
}

// forget drops the limits of processes no longer listed.
func (p *Processes) forget(pids map[int]int) {
	running := make(map[int]bool, len(pids))
	for _, pid := range pids {
		running[pid] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for pid := range p.limits {
		if !running[pid] {
			delete(p.limits, pid)
		}
	}
}
