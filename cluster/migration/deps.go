package migration

import (
	"context"
	"encoding/json"
	"net"
	"os"

	"ssi/cluster/stdio"
	"ssi/cluster/wire"
	"ssi/migrate"
	"ssi/raftstore"
)

// The seams: what the transaction needs of the rest of the agent, each
// declared here so that a test can stand in for it.

// Checkpointer is the mechanism that stops and copies a process tree:
// CRIU (*migrate.Client) in the agent, a fake in the unit tests.
type Checkpointer interface {
	Dump(ctx context.Context, o migrate.DumpOptions) (*migrate.DumpStats, error)
	Restore(ctx context.Context, o migrate.RestoreOptions) (*migrate.Restored, error)
	StartPageServer(ctx context.Context, dir string, sock *os.File) (pid int, err error)
}

// Host is what the transaction reads of this node and of a process
// tree, outside CRIU: what a move must carry or find at the far end.
type Host interface {
	// Describe is what the destination must know of the tree rooted at
	// pid before anything stops: who it runs as, the node mounts in its
	// mount namespace, the files it holds outside its own mounts.
	Describe(pid int) (Tree, error)
	// CheckArrival says why this node cannot take a process described
	// by hdr ("" if it can): mounts it lacks, files its owner cannot
	// open here as they were (migrate.CheckFiles), its job init. It is
	// the early answer; the restore checks the files again (FileCheck).
	CheckArrival(hdr wire.StreamHeader) string
	// FileCheck is how a restore here checks the files of uid's
	// arriving process before CRIU, which runs as root, reopens them
	// (migrate.FileCheck); nil checks nothing (a test's host).
	FileCheck(uid uint32) *migrate.FileCheck
	// FDKey is CRIU's name of a pipe of pid's (migrate.FDKey).
	FDKey(pid, fd int) string
	// Signal sends sig to every process of the tree rooted at pid.
	Signal(pid int, sig os.Signal)
	// FlushHome commits the writes to /cluster/home this node still
	// buffers for the frozen tree (nil without /cluster).
	FlushHome(ctx context.Context) error
}

// Tree is what Describe found.
type Tree struct {
	UID, GID uint32
	Mounts   []string
	Files    []migrate.FileRef
}

// Cluster is the agreed state and the other nodes: peer.Cluster in the
// agent, a one-node store and in-process pipes in the tests.
type Cluster interface {
	Store() (*raftstore.Store, error)
	// Apply applies cmd through the leader.
	Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error)
	// Fresh passes the read barrier; CatchUp too, but fails without a
	// quorum instead of serving a stale replica.
	Fresh(ctx context.Context) (stale bool, err error)
	CatchUp(ctx context.Context) error
	// DialMigrate opens a stream to node's migration port.
	DialMigrate(ctx context.Context, node string) (net.Conn, error)
	// Call posts in to node's peer API at path and decodes its answer
	// into out; ctx alone bounds it.
	Call(ctx context.Context, node, path string, in, out any) error
}

// Job is a cluster process running on this node (*jobs.Job).
type Job interface {
	CPID() int
	Pid() int
	Holder() *stdio.Holder // nil when detached
	// BeginMove marks the job as moving (fs.ErrBusy if it already is,
	// or is gone); end clears the mark.
	BeginMove() (end func(), err error)
	// Finish kills the stopped copy of a job that runs elsewhere now.
	Finish()
}

// Jobs is this node's job table (*jobs.Table behind a small adapter).
type Jobs interface {
	Job(cpid int) (Job, bool)
	// CantMove says why the job cannot move now, "" if it can.
	CantMove(j Job) string
	// Failed remembers why the last move of cpid failed ("" forgets).
	Failed(cpid int, why string)
	// Record writes cpid's record for the next agent; Forget removes it.
	Record(cpid, pid int, arriving bool)
	Forget(cpid int)
	// Land makes a restored process that won its move a job of this
	// node and lets it run.
	Land(cpid int, proc *os.Process, p *stdio.Pipes, home string, st *stdio.State)
	// WaitAdoption returns once the jobs an earlier agent left are
	// adopted.
	WaitAdoption(ctx context.Context) error
}

// Placer turns "balance" into a node (placement.LeastLoaded).
type Placer func(s *raftstore.Store, current string) string
