package jobs

import (
	"sync"
	"time"

	"ssi/cluster/telemetry"
	"ssi/migrate"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times.
const clockTicks = 100

// sampler keeps each job's CPU time at the previous sample, to tell its
// CPU use since.
type sampler struct {
	mu   sync.Mutex // protects prev
	prev map[int]procCPU
}

type procCPU struct {
	ticks    uint64
	runnable time.Duration // the tree's, migrate.Runnable
	demand   float64       // decayed, telemetry.ProcSample.Demand
	at       time.Time
}

// demandDecay is the weight of the newest interval in a process's
// demand: about the last three samples count, as openMosix's decaying
// per-process statistics did, so one quiet second does not make a busy
// process look idle.
const demandDecay = 0.5

// measure measures the tree of j's init: its CPU use and demand since
// the previous sample of cpid (next keeps this one's) and memory.
func (sm *sampler) measure(j *Job, now time.Time, next map[int]procCPU) telemetry.ProcSample {
	ps := telemetry.ProcSample{Pid: j.Pid()}
	cur := procCPU{at: now}
	for _, pid := range migrate.Tree(j.Pid()) {
		st, _ := migrate.ReadStat(pid)
		cur.ticks += st.Ticks
		cur.runnable += migrate.Runnable(pid)
		ps.RSS += st.RSS
	}
	ps.CPUTime = time.Duration(cur.ticks) * time.Second / clockTicks
	if p, ok := sm.prev[j.cpid]; ok && now.After(p.at) && cur.ticks >= p.ticks {
		dt := now.Sub(p.at).Seconds()
		ps.CPU = 100 * float64(cur.ticks-p.ticks) / clockTicks / dt
		cur.demand = p.demand
		if cur.runnable >= p.runnable {
			rate := (cur.runnable - p.runnable).Seconds() / dt
			cur.demand = demandDecay*rate + (1-demandDecay)*p.demand
		}
	}
	ps.Demand = cur.demand
	next[j.cpid] = cur
	return ps
}

// Samples measures the processes running here, for telemetry; the CPU
// use is since the previous call.
func (t *Table) Samples(now time.Time) map[int]telemetry.ProcSample {
	t.samp.mu.Lock()
	defer t.samp.mu.Unlock()
	out := map[int]telemetry.ProcSample{}
	next := map[int]procCPU{}
	for _, j := range t.list() {
		moving, _ := j.flags()
		ps := t.samp.measure(j, now, next)
		if !moving {
			ps.CantMove = t.CantMove(j)
		}
		if ps.CantMove == "" {
			t.mu.Lock()
			ps.CantMove = t.lastFailure[j.cpid]
			t.mu.Unlock()
		}
		out[j.cpid] = ps
	}
	t.samp.prev = next
	return out
}

// CantMove says why the job cannot move now, "" if it can.
func (t *Table) CantMove(j *Job) string {
	s, err := t.c.Store()
	if err == nil {
		if p, ok := s.Proc(j.cpid); ok && p.Lock {
			return "locked (write 0 to lock to let it move)"
		}
	}
	return migrate.CantMove(j.Pid())
}

// SetCantMove remembers why the last migration of cpid failed, for the
// cantmove file until the next attempt.
func (t *Table) SetCantMove(cpid int, why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastFailure[cpid] = why
}

// ClearFailure forgets why cpid's last migration failed: it moved since.
func (t *Table) ClearFailure(cpid int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.lastFailure, cpid)
}
