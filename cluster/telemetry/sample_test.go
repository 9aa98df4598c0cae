package telemetry

import (
	"testing"
	"time"
)

func TestSamplerMeasuresBusyTime(t *testing.T) {
	used := time.Duration(0)
	s := &Sampler{node: "n1", cpus: 2, usage: func() (time.Duration, bool) { return used, true }}
	t0 := time.Unix(100, 0)
	if got := s.Sample(t0); got.Load != 0 || got.Node != "n1" || got.CPUs != 2 {
		t.Fatalf("first sample %+v", got)
	}
	used = 1500 * time.Millisecond
	if got := s.Sample(t0.Add(time.Second)); got.Load != 1.5 {
		t.Fatalf("load %v, want 1.5 (1.5 CPU-seconds in one second)", got.Load)
	}
	if got := s.Sample(t0.Add(3 * time.Second)); got.Load != 0 {
		t.Fatalf("idle load %v, want 0", got.Load)
	}
}

func TestProcStatAndMemInfo(t *testing.T) {
	a, ok := procStatUsage()
	if !ok || a <= 0 {
		t.Fatalf("procStatUsage = %v, %v", a, ok)
	}
	total, free := memInfo()
	if total == 0 || free == 0 || free > total {
		t.Fatalf("memInfo = %d, %d", total, free)
	}
}

// A lab node's memory is its cgroup's limit, and what is free of it the
// limit less what its processes use: inactive page cache is reclaimed
// before anything is OOM-killed, so it counts as free.
func TestCgroupMemory(t *testing.T) {
	const mib = 1 << 20
	v1stat := "cache 104857600\nrss 314572800\ninactive_file 1048576\nactive_file 0\n" +
		"total_cache 104857600\ntotal_rss 314572800\ntotal_inactive_file 83886080\ntotal_active_file 20971520\n"
	v2stat := "anon 314572800\nfile 104857600\nkernel 8388608\ninactive_anon 0\nactive_anon 314572800\ninactive_file 83886080\nactive_file 20971520\n"
	cases := []struct {
		name, limit, usage, stat string
		total, free              uint64
		ok                       bool
	}{
		{"v1", "536870912\n", "440401920\n", v1stat, 512 * mib, (512 - 420 + 80) * mib, true},
		{"v2", "536870912\n", "440401920\n", v2stat, 512 * mib, (512 - 420 + 80) * mib, true},
		{"v2 no limit", "max\n", "440401920\n", v2stat, 0, 0, false},
		{"over the limit", "536870912", "545259520", "", 512 * mib, 0, true},
		{"more cache than usage", "536870912", "1048576", "inactive_file 2097152\n", 512 * mib, 512 * mib, true},
		{"no cgroup files", "", "", "", 0, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			total, free, ok := cgroupMem(c.limit, c.usage, c.stat)
			if total != c.total || free != c.free || ok != c.ok {
				t.Fatalf("cgroupMem = %d MiB, %d MiB, %v; want %d MiB, %d MiB, %v",
					total/mib, free/mib, ok, c.total/mib, c.free/mib, c.ok)
			}
		})
	}
	total, avail := parseMeminfo("MemTotal:       24683788 kB\nMemFree:        23652220 kB\nMemAvailable:   24199296 kB\n")
	if total != 24683788<<10 || avail != 24199296<<10 {
		t.Fatalf("parseMeminfo = %d, %d", total, avail)
	}
}
