package telemetry

import (
	"math"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// SpeedUnit is the speed of the reference CPU, as openMosix counted
// speeds (/cluster/nodes/N/speed): one core of the 2026 machine ssi was
// developed on. A node's speed weighs its CPUs in every placement.
const SpeedUnit = 10000

// referenceRate is the benchmark's steps per CPU-second on the
// reference CPU.
const referenceRate = 330e6

// MeasureSpeed runs a short integer benchmark on one CPU and says how
// fast that CPU is against the reference, in SpeedUnit, rounded to 10%
// so that like CPUs read alike. It counts the thread's own CPU time,
// not the wall clock, so a CPU quota (a lab node's) or other work on
// the machine does not make a CPU look slower: quotas are the node's
// CPUs, not its speed. It takes about 200 ms of CPU.
func MeasureSpeed() int {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	best := 0.0
	// The best of short runs: a run the hypervisor or a sibling thread
	// slowed down counts its lost time as the thread's.
	for range 40 {
		t0 := threadCPU()
		steps := 0
		for threadCPU()-t0 < 5*time.Millisecond {
			benchSink += benchWork(1 << 12)
			steps += 1 << 12
		}
		if d := threadCPU() - t0; d > 0 {
			best = max(best, float64(steps)/d.Seconds())
		}
	}
	step := SpeedUnit / 10.0
	return max(int(step), int(math.Round(best/referenceRate*SpeedUnit/step)*step))
}

func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// benchSink keeps the benchmark's result alive.
var benchSink uint64

// benchWork is n steps of xorshift with a branch on the data: integer
// work that no CPU extension shortcuts.
func benchWork(n int) uint64 {
	x := uint64(88172645463325252)
	var s uint64
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if x&1 == 0 {
			s += x * 2685821657736338717
		} else {
			s ^= x >> 3
		}
	}
	return s
}

// Work does the benchmark's work for seconds of the reference CPU, in
// chunks: a fixed amount of work, whatever the CPU's speed, that a move
// does not restart (its progress is in memory). For `ssi debug spin`.
func Work(seconds float64) {
	for left := int64(seconds * referenceRate); left > 0; left -= 1 << 20 {
		benchSink += benchWork(1 << 20)
	}
}
