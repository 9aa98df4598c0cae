package jobs

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"ssi/cluster/stdio"
	"ssi/migrate"
	"ssi/raftstore"
)

// Config is what the table needs of the agent's configuration.
type Config struct {
	// Node is this node's name.
	Node string
	// DataDir holds the job records (DataDir/jobs) and the job init
	// (DataDir/bin).
	DataDir string
	// MaxPerUser is how many cluster processes one uid other than root
	// may have at once, cluster-wide (jobs.max_per_user); 0: no limit.
	MaxPerUser int
	// Place is the placement policy's "balance" (the hook the migration
	// package uses too): the node a process now on current is best run
	// on, "" if none qualifies. ssi run --best asks it; nil: here.
	Place func(s *raftstore.Store, current string) string
	// PauseStart (SSI_PAUSE_START, a test's failure point) holds every
	// start asked of this node, once it is allowed and before anything
	// is started: the agent creates PauseStart+".paused" and waits until
	// PauseStart exists, at most a minute. How the tests kill a chosen
	// node in the middle of a start.
	PauseStart string
}

// Cluster is what the table needs of the cluster. Every method may be
// called from any goroutine, before the node is a member too: Store then
// fails, and so does everything that needs it.
type Cluster interface {
	// Store is the agreed state, once this node is a member.
	Store() (*raftstore.Store, error)
	// Apply applies cmd through the leader, here or forwarded; the
	// answer is the command's raftstore.Result, encoded.
	Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error)
	// Fresh passes the read barrier; stale reports that it could not, and
	// the caller reads this replica as it is.
	Fresh(ctx context.Context) (stale bool, err error)
	// CatchUp is the read barrier for those that must not go on with a
	// stale replica: it fails instead.
	CatchUp(ctx context.Context) error
	// Post sends one request to a peer's path at addr; an error worth
	// trying again wraps api.ErrRetry.
	Post(ctx context.Context, addr, path string, body []byte, out any) error
	// NodeAddr is the cluster address of node name.
	NodeAddr(name string) (string, error)
}

// Table is the cluster processes running on this node.
type Table struct {
	cfg      Config
	c        Cluster
	sessions *stdio.Sessions
	dial     stdio.Dialer
	log      *slog.Logger
	rec      records
	cg       cgroups
	samp     sampler
	adopted  chan struct{} // closed once Adopt is done
	starting userLocks     // one start at a time per uid, for MaxPerUser
	// asked are the starts homes have asked of this node and that are
	// under way (HandleStart): a repeated ask waits for the first.
	asked pending

	// changed is told when a job comes, goes, or begins or ends a move:
	// what a wait for a job here blocks on.
	changed broadcast

	mu sync.Mutex // protects jobs and lastFailure
	// jobs are the cluster processes running here, lastFailure why each
	// one's last migration failed.
	jobs        map[int]*Job
	lastFailure map[int]string
}

// New returns the table of the node cfg names. Attached callers talk to
// sessions (this node is their home); dial reaches the session of a
// process whose home is another node.
func New(cfg Config, c Cluster, sessions *stdio.Sessions, dial stdio.Dialer, log *slog.Logger) *Table {
	return &Table{cfg: cfg, c: c, sessions: sessions, dial: dial, log: log,
		rec: records{dir: filepath.Join(cfg.DataDir, "jobs"), log: log}, cg: cgroups{root: "/sys/fs/cgroup"},
		adopted: make(chan struct{}), jobs: map[int]*Job{}, lastFailure: map[int]string{}}
}

// Get is the job cpid, if it runs here.
func (t *Table) Get(cpid int) (*Job, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j, ok := t.jobs[cpid]
	return j, ok
}

// add starts supervising a running (or restored) job.
func (t *Table) add(j *Job) {
	j.onChange = t.changed.wake
	t.mu.Lock()
	t.jobs[j.cpid] = j
	t.mu.Unlock()
	t.changed.wake()
	t.rec.write(j.cpid, j.Pid(), false)
	go t.supervise(j)
}

// list is every job, for those that look at each without the lock.
func (t *Table) list() []*Job {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*Job, 0, len(t.jobs))
	for _, j := range t.jobs {
		out = append(out, j)
	}
	return out
}

// broadcast tells every waiter that something changed.
type broadcast struct {
	mu sync.Mutex    // protects ch
	ch chan struct{} // closed at the next change
}

// next is closed at the next change (once wake is called).
func (b *broadcast) next() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// wake ends the current wait for a change.
func (b *broadcast) wake() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// Land makes an arrival that won its move a job of this node: our ends
// of its pipes (p, nil if detached) go to a new holder feeding the
// session on node home from where st (the old holder's) left off, it
// enters its cgroup and is resumed. log is the arrival's.
func (t *Table) Land(log *slog.Logger, cpid int, proc *os.Process, p *stdio.Pipes, home string, st *stdio.State) {
	j := &Job{cpid: cpid, proc: proc}
	if p != nil {
		j.hold = stdio.NewHolder(cpid, home, j.Pid, p, st, t.dial, t.log)
		j.hold.Start()
	}
	if err := t.cg.enter(cpid, migrate.Tree(proc.Pid)...); err != nil {
		log.Warn("the job's cgroup", "err", err)
	}
	t.add(j)
	_ = migrate.SignalTree(proc.Pid, syscall.SIGCONT)
	log.Info("process arrived", "pid", proc.Pid)
}

// supervise waits for the job's init to end. A job that moved away is
// only forgotten here; one that ended is forgotten by the cluster, with
// its exit code, and its attached caller learns the code.
func (t *Table) supervise(j *Job) {
	var exit *int
	if j.adopted {
		waitAdopted(j.Pid())
	} else if st, err := j.proc.Wait(); err == nil {
		code := st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		exit = &code
	}
	t.rec.forgetOf(j.cpid, j.Pid())
	go t.cg.remove(j.cpid)
	t.mu.Lock()
	if t.jobs[j.cpid] == j {
		delete(t.jobs, j.cpid)
		delete(t.lastFailure, j.cpid)
	}
	t.mu.Unlock()
	t.changed.wake()
	if _, gone := j.flags(); gone {
		return
	}
	code := -1
	if exit != nil {
		code = *exit
	}
	t.log.Info("process ended", "cpid", j.cpid, "code", code)
	// Agreed before the attached caller hears of it: once `ssi run` has
	// returned, no node lists the process.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := t.c.Apply(ctx, raftstore.ProcRemove{CPID: j.cpid, ExitCode: exit, EndedAt: time.Now()}); err != nil {
		t.log.Warn("forgetting an ended process", "cpid", j.cpid, "err", err)
	}
	if j.hold != nil {
		j.hold.Finish(code)
	}
}

// Record writes the record of process cpid, whose init is pid here, for
// the next agent; arriving: restored here, stopped, before its move's
// outcome is known (the next agent settles it through a Resolver).
func (t *Table) Record(cpid, pid int, arriving bool) { t.rec.write(cpid, pid, arriving) }

// Forget removes the record of process cpid: it does not run here.
func (t *Table) Forget(cpid int) { t.rec.forget(cpid) }
