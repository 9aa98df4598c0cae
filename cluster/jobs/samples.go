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
	ticks uint64
	at    time.Time
}

// measure measures the tree of j's init: its CPU use since the previous
// sample of cpid (next keeps this one's) and memory.
func (sm *sampler) measure(j *Job, now time.Time, next map[int]procCPU) telemetry.ProcSample {
	ps := telemetry.ProcSample{Pid: j.Pid()}
	var ticks uint64
	for _, pid := range migrate.Tree(j.Pid()) {
		st, _ := migrate.ReadStat(pid)
		ticks += st.Ticks
		ps.RSS += st.RSS
	}
	next[j.cpid] = procCPU{ticks: ticks, at: now}
	if p, ok := sm.prev[j.cpid]; ok && now.After(p.at) && ticks >= p.ticks {
		ps.CPU = 100 * float64(ticks-p.ticks) / clockTicks / now.Sub(p.at).Seconds()
	}
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
