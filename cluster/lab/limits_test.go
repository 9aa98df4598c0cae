package lab

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLimitsPerNode(t *testing.T) {
	c := cgroups{quotas: []float64{1, 0.5, 0.5}, mems: []uint64{512 << 20}}
	for k, want := range map[int]float64{1: 1, 2: 0.5, 3: 0.5, 4: 0} {
		if cpus, mem := c.limits(k); cpus != want || mem != 512<<20 {
			t.Errorf("node%d limits %v, %d; want %v, 512 MiB", k, cpus, mem, want)
		}
	}
	if err := c.checkLimits(3); err != nil {
		t.Errorf("3 quotas for 3 nodes: %v", err)
	}
	if err := c.checkLimits(4); err == nil {
		t.Error("3 quotas for 4 nodes accepted")
	}
	if err := (&cgroups{mems: []uint64{1, 2}}).checkLimits(3); err == nil {
		t.Error("2 memory limits for 3 nodes accepted")
	}
	if cpus, mem := (&cgroups{}).limits(2); cpus != 0 || mem != 0 {
		t.Errorf("no limits read as %v, %d", cpus, mem)
	}
}

// A lab keeps its limits in its record: commands that do not give them
// (start, status) act with the lab's, and a record of a lab made before
// limits per node still gives its one quota.
func TestLimitsKeptInTheRecord(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(Options{Name: "lim", Dir: dir, Subnet: "10.213.5.0/24", Nodes: 2,
		CPUQuota: []float64{1, 0.5}, MemLimit: []uint64{512 << 20, 2 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.Root(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := l.writeRecord(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(Options{Name: "lim", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if cpus, mem := again.limits(2); cpus != 0.5 || mem != 2<<30 {
		t.Errorf("node2's limits from the record: %v, %d", cpus, mem)
	}
	old := `{"nodes": 4, "subnet": "10.213.5.0/24", "cpu_quota": 0.25}`
	if err := os.WriteFile(filepath.Join(dir, "lim", "lab.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	older, err := Open(Options{Name: "lim", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if cpus, mem := older.limits(4); cpus != 0.25 || mem != 0 {
		t.Errorf("node4's limits from an old record: %v, %d", cpus, mem)
	}
}
