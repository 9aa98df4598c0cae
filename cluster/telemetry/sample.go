package telemetry

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Sample is one node's load, measured locally every telemetry interval.
// It travels between agents directly, never through the Raft log: it
// changes every second and losing one is harmless.
type Sample struct {
	Node     string    `json:"node"`
	Load     float64   `json:"load"` // CPUs' worth of time used per second (1.0 = one CPU busy)
	CPUs     float64   `json:"cpus"` // CPUs the node may use (its quota, or the machine's)
	MemTotal uint64    `json:"mem_total"`
	MemFree  uint64    `json:"mem_free"`
	At       time.Time `json:"at"`
	// Procs are the cluster processes running on the node, by cpid.
	Procs map[int]ProcSample `json:"procs,omitempty"`
	// Seen is when this node received it, by its own clock: liveness is
	// judged by it, so clocks of different nodes need not agree.
	Seen time.Time `json:"-"`
}

// ProcSample is what a node measures of a process running there; it
// travels with the node's telemetry.
type ProcSample struct {
	Pid int     `json:"pid"`
	CPU float64 `json:"cpu"` // percent of one CPU, over the last interval
	// Demand is the CPUs' worth the process would use if nothing held
	// it back (runnable time per second, decayed): unlike CPU it does
	// not shrink when the node is full, so the balancer sees what a
	// move would give it.
	Demand   float64       `json:"demand,omitempty"`
	CPUTime  time.Duration `json:"cpu_time,omitempty"` // CPU used so far, by the whole tree
	RSS      uint64        `json:"rss"`
	CantMove string        `json:"cantmove,omitempty"`
}

// Sampler measures this node's load. In a lab node (the agent runs in a
// cgroup under ssi-lab/) the node is its cgroup, so it reads the cgroup's
// CPU usage; on a real machine the node is the machine (/proc/stat).
type Sampler struct {
	node    string
	usage   func() (time.Duration, bool) // cumulative CPU time used by the node
	cpus    float64
	prev    time.Duration
	prevAt  time.Time
	hasPrev bool
}

// NewSampler finds what to measure for this process's node.
func NewSampler(node string) *Sampler {
	s := &Sampler{node: node, cpus: float64(runtime.NumCPU())}
	if dir, v2, ok := labCgroup("cpuacct"); ok {
		if v2 {
			s.usage = func() (time.Duration, bool) { return cgroup2Usage(dir) }
		} else {
			s.usage = func() (time.Duration, bool) {
				return readDuration(filepath.Join(dir, "cpuacct.usage"), time.Nanosecond)
			}
		}
		if q, ok := cgroupQuota(); ok {
			s.cpus = q
		}
	} else {
		s.usage = procStatUsage
	}
	return s
}

// Sample measures the load since the previous call (the first call
// reports zero load).
func (s *Sampler) Sample(now time.Time) Sample {
	out := Sample{Node: s.node, CPUs: s.cpus, At: now}
	out.MemTotal, out.MemFree = memInfo()
	if u, ok := s.usage(); ok {
		if s.hasPrev && now.After(s.prevAt) {
			out.Load = float64(u-s.prev) / float64(now.Sub(s.prevAt))
			if out.Load < 0 {
				out.Load = 0
			}
		}
		s.prev, s.prevAt, s.hasPrev = u, now, true
	}
	return out
}

// labCgroup returns this process's cgroup directory for controller if it
// is a lab node's cgroup.
func labCgroup(controller string) (dir string, v2, ok bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "/ssi-lab/") {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			return filepath.Join("/sys/fs/cgroup", parts[2]), true, true
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == controller {
				return filepath.Join("/sys/fs/cgroup", controller, parts[2]), false, true
			}
		}
	}
	return "", false, false
}

// cgroupQuota returns the node's CPU quota in CPUs, if one is set.
func cgroupQuota() (float64, bool) {
	if dir, v2, ok := labCgroup("cpu"); ok {
		if v2 {
			b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
			f := strings.Fields(string(b))
			if err != nil || len(f) != 2 || f[0] == "max" {
				return 0, false
			}
			q, _ := strconv.ParseFloat(f[0], 64)
			p, _ := strconv.ParseFloat(f[1], 64)
			return q / p, p > 0 && q > 0
		}
		q, ok1 := readInt(filepath.Join(dir, "cpu.cfs_quota_us"))
		p, ok2 := readInt(filepath.Join(dir, "cpu.cfs_period_us"))
		if ok1 && ok2 && q > 0 && p > 0 {
			return float64(q) / float64(p), true
		}
	}
	return 0, false
}

func cgroup2Usage(dir string) (time.Duration, bool) {
	f, err := os.Open(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "usage_usec "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(n) * time.Microsecond, err == nil
		}
	}
	return 0, false
}

// clockTick is USER_HZ, the unit of /proc/stat on every Linux platform ssi
// runs on.
const clockTick = 100

// procStatUsage is the machine's busy CPU time: everything but idle and
// iowait.
func procStatUsage() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / clockTick, true
}

// memInfo returns the node's memory and how much of it is free: the
// machine's, or, in a lab node with a memory limit, the limit and the
// headroom under it. The kernel OOM-kills within a cgroup at its limit
// whatever the machine has free, so that headroom is what the balancer
// must see to usher a process away in time.
func memInfo() (total, free uint64) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	total, free = parseMeminfo(string(b))
	if dir, v2, ok := labCgroup("memory"); ok {
		files := [3]string{"memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat"}
		if v2 {
			files = [3]string{"memory.max", "memory.current", "memory.stat"}
		}
		var text [3]string
		for i, f := range files {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			text[i] = string(b)
		}
		if limit, headroom, ok := cgroupMem(text[0], text[1], text[2]); ok && limit < total {
			total, free = limit, min(free, headroom)
		}
	}
	return total, free
}

// parseMeminfo reads MemTotal and MemAvailable from /proc/meminfo.
func parseMeminfo(text string) (total, avail uint64) {
	for _, line := range strings.Split(text, "\n") {
		var v uint64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &v); err == nil {
			total = v << 10
		}
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &v); err == nil {
			avail = v << 10
		}
	}
	return total, avail
}

// cgroupMem reads a memory cgroup's limit and its headroom from the
// texts of its limit (v1 memory.limit_in_bytes or v2 memory.max), usage
// (memory.usage_in_bytes or memory.current) and memory.stat: the limit
// less what is used, where the inactive page cache counts as free (the
// kernel reclaims it before it OOM-kills). Not ok if there is no limit.
func cgroupMem(limit, usage, stat string) (total, free uint64, ok bool) {
	total, err1 := strconv.ParseUint(strings.TrimSpace(limit), 10, 64)
	used, err2 := strconv.ParseUint(strings.TrimSpace(usage), 10, 64)
	if err1 != nil || err2 != nil || total == 0 {
		return 0, 0, false // "max", or no such file
	}
	// v1's total_inactive_file counts the node's job cgroups too; v2's
	// inactive_file always does.
	inactive := map[string]uint64{}
	for _, line := range strings.Split(stat, "\n") {
		if k, v, found := strings.Cut(line, " "); found && (k == "total_inactive_file" || k == "inactive_file") {
			inactive[k], _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	cache, ok := inactive["total_inactive_file"]
	if !ok {
		cache = inactive["inactive_file"]
	}
	used -= min(used, cache)
	return total, total - min(total, used), true
}

func readInt(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil
}

func readDuration(path string, unit time.Duration) (time.Duration, bool) {
	n, ok := readInt(path)
	return time.Duration(n) * unit, ok
}
