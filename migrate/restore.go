package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"github.com/checkpoint-restore/go-criu/v7/stats"
)

// InheritFD hands an open file of ours to the restored tree in place of a
// file it had when dumped, e.g. a fresh pipe for its stdin. Key is CRIU's
// name of the dumped file, such as "pipe:[12345]".
type InheritFD struct {
	Key  string
	File *os.File
}

// RestoreOptions says which images to restore and how.
type RestoreOptions struct {
	// Dir holds the images; restore.log is written there.
	Dir string
	// InheritFDs replace files of the dumped tree.
	InheritFDs []InheritFD
	// TCPEstablished restores established TCP connections.
	TCPEstablished bool
	// FileLocks restores file locks.
	FileLocks bool
	// NodeMounts are the node mounts the dump left behind (DumpOptions):
	// the restored mount namespace binds this node's mounts there. Set,
	// the tree gets its own mount namespace again, rooted at this node's
	// root; unset, it shares the caller's.
	NodeMounts []string
	// LeaveStopped leaves the restored tasks stopped (SIGSTOP), so that a
	// migration can decide whether they run before any of them does.
	LeaveStopped bool
	// Files, when set, checks every file and socket path the images name
	// outside the tree's own mounts against the owner's rights before
	// CRIU runs, hands the regular files to CRIU open (the images of a
	// job's dump name them as external files and must get them), and
	// audits what the restored tree holds before it runs: see FileCheck.
	// A refusal wraps ErrUnsafeFile. Requires LeaveStopped.
	Files *FileCheck
	// Ready, if set, runs once the files are checked and opened, just
	// before CRIU starts: the tests' pause between check and restore.
	Ready func()
}

// Restored is a tree that runs again.
type Restored struct {
	// Pid of the tree's root as seen from the caller. The root is the
	// caller's child (CRIU's "restore sibling" mode): the caller must
	// wait for it.
	Pid     int
	Forking time.Duration
	Restore time.Duration
}

// Restore brings the tree in o.Dir back to life in the caller's network
// and mount namespaces and cgroup, as a child of the caller.
func (c *Client) Restore(ctx context.Context, o RestoreOptions) (*Restored, error) {
	if _, err := os.Stat(filepath.Join(o.Dir, "inventory.img")); err != nil {
		return nil, fmt.Errorf("%w: no checkpoint in %s (inventory.img: %v)", ErrRestore, o.Dir, err)
	}
	var v *vetted
	if o.Files != nil {
		if !o.LeaveStopped {
			return nil, fmt.Errorf("%w: a checked restore must leave the tree stopped", ErrRestore)
		}
		var err error
		if v, err = vetFiles(o.Dir, *o.Files); err != nil {
			return nil, err
		}
		// CRIU has its own copies once it runs; ours close on return.
		defer v.close()
		o.InheritFDs = append(slices.Clone(o.InheritFDs), v.inherit...)
	}
	if o.Ready != nil {
		o.Ready()
	}
	r, err := c.restore(ctx, o)
	if err != nil || v == nil {
		return r, err
	}
	if err := v.audit(r.Pid); err != nil {
		// Nothing of it ran: it is killed stopped, and reaped (it is our
		// child).
		_ = SignalTree(r.Pid, syscall.SIGKILL)
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(r.Pid, &ws, 0, nil)
		return nil, err
	}
	return r, nil
}

// restore runs CRIU's restore of o.
func (c *Client) restore(ctx context.Context, o RestoreOptions) (r *Restored, err error) {
	dir, err := os.Open(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRestore, err)
	}
	defer dir.Close()

	var extra []*os.File
	var inherit []*rpc.InheritFd
	for i, f := range o.InheritFDs {
		extra = append(extra, f.File)
		// fd 3 is the RPC socket; extra files follow it in criu.
		inherit = append(inherit, &rpc.InheritFd{Key: ptr(f.Key), Fd: ptr(int32(4 + i))})
	}
	opts := &rpc.CriuOpts{
		ImagesDirFd:    ptr(int32(dir.Fd())),
		LogLevel:       ptr(int32(4)),
		LogFile:        ptr("restore.log"),
		RstSibling:     ptr(true),
		InheritFd:      inherit,
		TcpEstablished: ptr(o.TCPEstablished),
		FileLocks:      ptr(o.FileLocks),
		ExtUnixSk:      ptr(false),
		LeaveStopped:   ptr(o.LeaveStopped),
		// The caller puts the tree in its cgroups (the job's, on this
		// node). CRIU's own cgroup restore would mount a cgroup yard in
		// the caller's mount namespace for the time of the restore, and
		// every job started meanwhile would copy that mount into its own
		// namespace (see cluster/jobns) and could not move where it is
		// missing.
		ManageCgroupsMode: ptr(rpc.CriuCgMode_IGNORE),
	}
	if len(o.NodeMounts) > 0 {
		// CRIU restores a mount namespace only under a given root.
		opts.Root = ptr("/")
		opts.External = externalMounts(o.NodeMounts)
	}
	s, err := c.startSwrk(extra, nil)
	if err != nil {
		return nil, err
	}
	defer s.done(&err)

	c.log.Debug("criu restore", "dir", o.Dir)
	resp, err := s.call(ctx, &rpc.CriuReq{Type: ptr(rpc.CriuReqType_RESTORE), Opts: opts})
	if err != nil || !resp.GetSuccess() {
		return nil, failure(ErrRestore, resp, err, filepath.Join(o.Dir, "restore.log"))
	}
	r = &Restored{Pid: int(resp.GetRestore().GetPid())}
	if rs, err := stats.CriuGetRestoreStats(dir); err == nil {
		r.Forking = time.Duration(rs.GetForkingTime()) * time.Microsecond
		r.Restore = time.Duration(rs.GetRestoreTime()) * time.Microsecond
	}
	return r, nil
}
