package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"github.com/checkpoint-restore/go-criu/v7/stats"
)

// DumpOptions says what to checkpoint and what to leave behind.
type DumpOptions struct {
	// Pid is the root of the tree, as seen from the caller.
	Pid int
	// Dir receives the images and dump.log; it is created if missing.
	Dir string
	// LeaveRunning resumes the tree after the dump (a copy, not a move).
	LeaveRunning bool
	// LeaveStopped keeps the tree frozen after the dump, so that a
	// migration can resume it if the restore elsewhere fails.
	LeaveStopped bool
	// TCPEstablished dumps established TCP connections (repaired on
	// restore). Without it such a tree is refused.
	TCPEstablished bool
	// FileLocks dumps file locks.
	FileLocks bool
	// UID and GID, when UID is not 0, run CRIU as the tree's own user
	// in CRIU's unprivileged mode, with only the capabilities a dump
	// needs: root here lacks CAP_SYS_RESOURCE and cannot read another
	// user's rlimits, and the images are then the user's, not root's.
	UID, GID uint32
	// NodeMounts are mount points of the tree's mount namespace that
	// belong to the node, not to the tree: they are not dumped, and the
	// restore binds the destination's mount at the same place. Set only
	// for a tree in its own mount namespace (a job's). Set, every
	// regular file the tree holds outside its own mounts is dumped as an
	// external file (FileRef.Key) and recorded in HeldFilesName: the
	// restore must be given each one open (RestoreOptions.Files).
	NodeMounts []string
	// PageServer, if set, is a connected stream socket to a page server
	// (see StartPageServer): memory pages go there, not to Dir.
	PageServer *os.File
}

// DumpStats is what CRIU measured during a dump.
type DumpStats struct {
	Freezing     time.Duration // from the freeze request until all tasks stopped
	Frozen       time.Duration // tasks stopped
	MemDump      time.Duration
	MemWrite     time.Duration
	PagesWritten uint64
}

// Dump checkpoints the tree rooted at o.Pid into o.Dir. Unless
// LeaveRunning or LeaveStopped is set, CRIU kills the tree once its images
// are complete.
func (c *Client) Dump(ctx context.Context, o DumpOptions) (st *DumpStats, err error) {
	if o.Pid <= 0 {
		return nil, fmt.Errorf("%w: pid %d", ErrDump, o.Pid)
	}
	if o.LeaveRunning && o.LeaveStopped {
		return nil, fmt.Errorf("%w: leave running and leave stopped both asked", ErrDump)
	}
	dir, err := openDumpDir(o)
	if err != nil {
		return nil, err
	}
	defer dir.Close()

	opts, extra, err := dumpCriuOpts(o, dir)
	if err != nil {
		return nil, err
	}
	s, err := c.startSwrk(extra, asUser(o.UID, o.GID))
	if err != nil {
		return nil, err
	}
	defer s.done(&err)
	var ext *externals
	if len(o.NodeMounts) > 0 {
		// CRIU asks for its external objects once the tree is frozen:
		// what it holds then is exactly what the images will name.
		ext = &externals{pid: o.Pid}
		opts.NotifyScripts = ptr(true)
		s.notify = ext.notify
	}

	c.log.Debug("criu dump", "pid", o.Pid, "dir", o.Dir)
	resp, err := s.call(ctx, &rpc.CriuReq{Type: ptr(rpc.CriuReqType_DUMP), Opts: opts})
	if err != nil || !resp.GetSuccess() {
		return nil, failure(ErrDump, resp, err, filepath.Join(o.Dir, "dump.log"))
	}
	if ext != nil {
		if err := ext.record(o.Dir); err != nil {
			return nil, err
		}
	}
	ds, err := stats.CriuGetDumpStats(dir)
	if err != nil {
		// The dump itself succeeded; missing statistics are not fatal.
		c.log.Warn("criu dump statistics unreadable", "err", err)
		return &DumpStats{}, nil
	}
	return dumpStats(ds), nil
}

// openDumpDir creates o.Dir if missing, gives it to the tree's user when
// CRIU runs as that user, and opens it for CRIU.
func openDumpDir(o DumpOptions) (*os.File, error) {
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDump, err)
	}
	if o.UID != 0 {
		if err := os.Chown(o.Dir, int(o.UID), int(o.GID)); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDump, err)
		}
	}
	dir, err := os.Open(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDump, err)
	}
	return dir, nil
}

// dumpCriuOpts converts o into CRIU's options for a dump into dir, with
// the descriptors criu swrk must inherit (the page server's, dir's).
func dumpCriuOpts(o DumpOptions, dir *os.File) (*rpc.CriuOpts, []*os.File, error) {
	external, skip := o.NodeMounts, []string(nil)
	if len(o.NodeMounts) > 0 {
		var err error
		if skip, err = hiddenMounts(o.Pid); err != nil {
			return nil, nil, fmt.Errorf("%w: reading its mounts: %v", ErrDump, err)
		}
		external = withoutPaths(o.NodeMounts, skip)
	}
	opts := &rpc.CriuOpts{
		ImagesDirFd:    ptr(int32(dir.Fd())),
		Pid:            ptr(int32(o.Pid)),
		LogLevel:       ptr(int32(4)),
		LogFile:        ptr("dump.log"),
		LeaveRunning:   ptr(o.LeaveRunning),
		LeaveStopped:   ptr(o.LeaveStopped),
		TcpEstablished: ptr(o.TCPEstablished),
		FileLocks:      ptr(o.FileLocks),
		// Unix sockets to peers outside the tree are not ours to move.
		ExtUnixSk: ptr(false),
		External:  externalMounts(external),
		// Deleted files still open in the job's own /tmp (CantMove
		// refuses the others and bigger ones).
		GhostLimit: ptr(uint32(GhostLimit)),
		// What the tree cannot reach is neither carried nor bound again.
		SkipMnt: skip,
	}
	var extra []*os.File
	if o.PageServer != nil {
		extra = append(extra, o.PageServer)
		opts.Ps = &rpc.CriuPageServerInfo{Fd: ptr(int32(4))}
	}
	if o.UID != 0 {
		opts.Unprivileged = ptr(true)
		// criu swrk opens images_dir_fd through /proc/<caller>/fd, which
		// a user may not read in a root caller; and it readlinks
		// images_dir, so a plain path fails. It gets the directory as one
		// of its own descriptors, named by its /proc/self/fd link.
		extra = append(extra, dir)
		opts.ImagesDirFd = ptr(int32(-1))
		opts.ImagesDir = ptr("/proc/self/fd/" + itoa(3+len(extra)))
	}
	return opts, extra, nil
}

// dumpStats converts CRIU's dump statistics (times in microseconds).
func dumpStats(ds *stats.DumpStatsEntry) *DumpStats {
	us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
	return &DumpStats{
		Freezing:     us(ds.GetFreezingTime()),
		Frozen:       us(ds.GetFrozenTime()),
		MemDump:      us(ds.GetMemdumpTime()),
		MemWrite:     us(ds.GetMemwriteTime()),
		PagesWritten: ds.GetPagesWritten(),
	}
}

// externalMounts names node mounts for CRIU as runc does: the key is the
// mount point; at restore it maps to the same path in the restoring
// process's mount namespace.
func externalMounts(mps []string) []string {
	out := make([]string, 0, len(mps))
	for _, mp := range mps {
		out = append(out, "mnt["+mp+"]:"+mp)
	}
	return out
}

// externals answers a job's dump's "query-ext-files": the regular files
// the frozen tree holds outside its own mounts, which CRIU then dumps as
// external files; record writes them into the images (HeldFilesName).
type externals struct {
	pid   int
	asked bool
	refs  []FileRef
}

func (e *externals) notify(n *rpc.CriuNotify) (*rpc.CriuOpts, error) {
	if n.GetScript() != "query-ext-files" {
		return nil, nil
	}
	e.asked = true
	var err error
	if e.refs, err = heldFiles(e.pid); err != nil {
		return nil, fmt.Errorf("reading what it holds: %w", err)
	}
	return &rpc.CriuOpts{ImagesDirFd: ptr(int32(-1)), External: externalFiles(e.refs)}, nil
}

func (e *externals) record(dir string) error {
	if !e.asked {
		// Only a CRIU older than 3.19 takes no external files late.
		return fmt.Errorf("%w: criu did not ask for the external files", ErrDump)
	}
	if err := writeHeldFiles(dir, e.refs); err != nil {
		return fmt.Errorf("%w: %v", ErrDump, err)
	}
	return nil
}

// externalFiles names, for CRIU, the regular files of refs as external
// files: CRIU records each by its key instead of its path, and reopens
// it at restore from the descriptor it is given under that key.
func externalFiles(refs []FileRef) []string {
	var out []string
	for _, r := range refs {
		if r.Key != "" {
			out = append(out, r.Key)
		}
	}
	return out
}

// withoutPaths is mps less the paths in drop.
func withoutPaths(mps, drop []string) []string {
	out := make([]string, 0, len(mps))
	for _, mp := range mps {
		if !slices.Contains(drop, mp) {
			out = append(out, mp)
		}
	}
	return out
}
