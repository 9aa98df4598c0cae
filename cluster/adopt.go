package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ssi/migrate"
	"ssi/raftstore"
)

// An agent that restarts (upgraded, crashed, killed) must not lose the
// cluster processes running on its node: they outlive it, re-parented
// to the machine's init. Each job is recorded in data_dir/jobs; a new
// agent adopts the records whose process still runs, resolves moves it
// was in the middle of, and tells the cluster which ones are gone.

// jobRecord identifies a job's init across agent restarts: a pid and
// that process's start time, so a recycled pid is not mistaken for it.
type jobRecord struct {
	CPID  int    `json:"cpid"`
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"` // clock ticks after boot (/proc/PID/stat)
	// Arriving: restored here, stopped, before the move's outcome was
	// known. A new agent settles the move and resumes or kills it.
	Arriving bool `json:"arriving,omitempty"`
}

func (a *Agent) jobsDir() string { return filepath.Join(a.cfg.DataDir, "jobs") }

// recordJob writes j's record; a job without one would be lost by the
// next agent, so failures are logged loudly.
func (a *Agent) recordJob(j *job) { a.writeJobRecord(j.cpid, j.pid(), false) }

func (a *Agent) writeJobRecord(cpid, pid int, arriving bool) {
	start, ok := procStart(pid)
	if !ok {
		return
	}
	b, _ := json.Marshal(jobRecord{CPID: cpid, Pid: pid, Start: start, Arriving: arriving})
	dir := a.jobsDir()
	tmp := filepath.Join(dir, fmt.Sprintf(".%d.tmp", cpid))
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		err = os.WriteFile(tmp, b, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, strconv.Itoa(cpid)))
	}
	if err != nil {
		a.log.Error("recording a job for the next agent", "cpid", cpid, "err", err)
	}
}

func (a *Agent) forgetJobRecord(cpid int) {
	_ = os.Remove(filepath.Join(a.jobsDir(), strconv.Itoa(cpid)))
}

// forgetJobRecordOf forgets cpid's record only if it is pid's: the same
// cpid may have come back to this node under another pid meanwhile.
func (a *Agent) forgetJobRecordOf(cpid, pid int) {
	b, err := os.ReadFile(filepath.Join(a.jobsDir(), strconv.Itoa(cpid)))
	var rec jobRecord
	if err == nil && json.Unmarshal(b, &rec) == nil && rec.Pid != pid {
		return
	}
	a.forgetJobRecord(cpid)
}

// procStart is a process's start time in clock ticks after boot.
func procStart(pid int) (uint64, bool) {
	st, ok := migrate.ReadStat(pid)
	return st.Start, ok
}

// adoptJobs runs once the node is a member: it retries until the cluster
// answers, since the decisions need the agreed state.
func (a *Agent) adoptJobs(ctx context.Context) {
	defer close(a.adopted)
	for {
		err := a.adoptOnce(ctx)
		if err == nil || ctx.Err() != nil {
			return
		}
		a.log.Debug("adopting this node's processes", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (a *Agent) adoptOnce(ctx context.Context) error {
	if err := a.catchUp(ctx); err != nil {
		return err
	}
	s, err := a.member()
	if err != nil {
		return err
	}
	files, _ := os.ReadDir(a.jobsDir())
	alive := map[int]bool{}
	for _, f := range files {
		cpid, err := strconv.Atoi(f.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.jobsDir(), f.Name()))
		var rec jobRecord
		if err != nil || json.Unmarshal(b, &rec) != nil || rec.CPID != cpid {
			a.forgetJobRecord(cpid)
			continue
		}
		if start, ok := procStart(rec.Pid); !ok || start != rec.Start {
			a.forgetJobRecord(cpid)
			continue
		}
		if _, ok := a.job(cpid); ok {
			alive[cpid] = true
			continue
		}
		if err := a.adopt(ctx, s, rec); err != nil {
			return err
		}
		alive[cpid] = true
	}
	// Processes the cluster places here that no record accounts for died
	// with the node (or its agent's state was lost).
	for _, p := range s.Procs() {
		if p.Node != a.cfg.NodeName || alive[p.CPID] || p.State == raftstore.ProcMigrating {
			continue
		}
		if _, ok := a.job(p.CPID); ok {
			continue
		}
		a.log.Warn("a process of this node is gone", "cpid", p.CPID)
		if _, err := a.apply(ctx, raftstore.ProcRemove{CPID: p.CPID, EndedAt: time.Now()}); err != nil &&
			!errors.Is(err, raftstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// adopt takes over a job whose init still runs. A move that was under
// way is settled first: its copy here is resumed or killed.
func (a *Agent) adopt(ctx context.Context, s *raftstore.Store, rec jobRecord) error {
	p, ok := s.Proc(rec.CPID)
	if !ok {
		// The cluster forgot it: it must not run unseen.
		_ = migrate.SignalTree(rec.Pid, syscall.SIGKILL)
		a.forgetJobRecord(rec.CPID)
		return nil
	}
	if m, moving := s.Migration(rec.CPID); moving && rec.Arriving && m.To == a.cfg.NodeName {
		// Restored here before the agent died: the restore worked, so
		// this side asks for the commit, as a destination that lost its
		// source does.
		o, err := a.settle(rec.CPID, m.ID, true, &raftstore.MoveStats{
			Reason: "the destination's agent restarted", EndedAt: time.Now()})
		if err != nil {
			return err
		}
		if o != committed {
			_ = migrate.SignalTree(rec.Pid, syscall.SIGKILL)
			a.forgetJobRecord(rec.CPID)
			return nil
		}
	} else if moving && m.From == a.cfg.NodeName {
		o, err := a.settle(rec.CPID, m.ID, false, &raftstore.MoveStats{
			Reason: "the source's agent restarted", EndedAt: time.Now()})
		if err != nil {
			return err
		}
		if o != aborted {
			_ = migrate.SignalTree(rec.Pid, syscall.SIGKILL)
			a.forgetJobRecord(rec.CPID)
			return nil
		}
	} else if p.Node != a.cfg.NodeName {
		// It runs elsewhere now: this is a stale stopped copy.
		_ = migrate.SignalTree(rec.Pid, syscall.SIGKILL)
		a.forgetJobRecord(rec.CPID)
		return nil
	}
	proc, err := os.FindProcess(rec.Pid)
	if err != nil {
		return err
	}
	if p, _ := s.Proc(rec.CPID); rec.Arriving || p.Node == a.cfg.NodeName {
		_ = enterJobCgroup(rec.CPID, migrate.Tree(rec.Pid)...)
	}
	_ = migrate.SignalTree(rec.Pid, syscall.SIGCONT)
	a.log.Info("adopted a running process", "cpid", rec.CPID, "pid", rec.Pid)
	a.addJob(&job{cpid: rec.CPID, proc: proc, adopted: true})
	return nil
}

// waitAdopted waits for an adopted init, which is not our child: its exit
// status is not ours to read.
func waitAdopted(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// waitAdopted returns once this agent has taken over the processes an
// earlier one left, so that nothing new is mistaken for a lost one.
func (a *Agent) waitAdoption(ctx context.Context) error {
	select {
	case <-a.adopted:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("this agent is still taking over its node's processes: %w", ctx.Err())
	}
}
