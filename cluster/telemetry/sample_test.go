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
