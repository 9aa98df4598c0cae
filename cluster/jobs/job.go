package jobs

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"ssi/cluster/stdio"
	"ssi/fs"
	"ssi/migrate"
)

// Job is a cluster process running on this node: its init, our child
// (started here, or restored here by CRIU as our child).
type Job struct {
	cpid int
	proc *os.Process
	hold *stdio.Holder // nil when detached
	// adopted: started by an earlier agent, so not our child.
	adopted bool
	// onChange tells the table that moving or gone changed (nil until
	// the job is in a table).
	onChange func()

	mu sync.Mutex // protects moving and gone
	// moving is set while a migration has the process frozen; gone once
	// its stopped copy here was killed because it runs elsewhere now.
	moving, gone bool
}

// CPID is the job's cluster-wide process id.
func (j *Job) CPID() int { return j.cpid }

// Pid is the pid of the job's init on this node.
func (j *Job) Pid() int { return j.proc.Pid }

// Holder is the job's end of its attached caller's stdio, nil when the
// job is detached.
func (j *Job) Holder() *stdio.Holder { return j.hold }

// BeginMove marks the job as frozen for a move, which end undoes (the
// move failed, or Finish has run). A job already moving, or gone, cannot
// begin another: fs.ErrBusy.
func (j *Job) BeginMove() (end func(), err error) {
	j.mu.Lock()
	if j.moving || j.gone {
		j.mu.Unlock()
		return nil, fmt.Errorf("%w: process %d is migrating", fs.ErrBusy, j.cpid)
	}
	j.moving = true
	j.mu.Unlock()
	j.notify()
	return func() {
		j.mu.Lock()
		j.moving = false
		j.mu.Unlock()
		j.notify()
	}, nil
}

// Finish kills the stopped copy of a process that now runs elsewhere:
// from now on nothing signals it or moves it again.
func (j *Job) Finish() {
	j.mu.Lock()
	j.gone = true
	j.mu.Unlock()
	j.notify()
	// Killing the init of a PID namespace kills all of it.
	_ = syscall.Kill(j.Pid(), syscall.SIGKILL)
	_ = migrate.SignalTree(j.Pid(), syscall.SIGKILL)
	if j.hold != nil {
		j.hold.Close()
	}
}

// Live reports whether the job is neither frozen for a move nor gone: the
// copy here is the process, and may be signalled.
func (j *Job) Live() bool {
	moving, gone := j.flags()
	return !moving && !gone
}

func (j *Job) flags() (moving, gone bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.moving, j.gone
}

func (j *Job) notify() {
	if j.onChange != nil {
		j.onChange()
	}
}

// signal delivers sig to the job's init, which passes it to the job's
// leader, or with all to every process of the job.
func (j *Job) signal(sig syscall.Signal, all bool) error {
	if !all {
		if err := syscall.Kill(j.Pid(), sig); err != nil {
			return fmt.Errorf("%w: signal %d to process %d: %v", fs.ErrNoProcess, sig, j.cpid, err)
		}
		return nil
	}
	// Everyone but the init, which ends by itself once they are gone.
	for _, pid := range migrate.Tree(j.Pid())[1:] {
		_ = syscall.Kill(pid, sig)
	}
	return nil
}
