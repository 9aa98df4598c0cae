package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDump, err)
	}
	dir, err := os.Open(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDump, err)
	}
	defer dir.Close()

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
	}
	var extra []*os.File
	if o.PageServer != nil {
		extra = append(extra, o.PageServer)
		opts.Ps = &rpc.CriuPageServerInfo{Fd: ptr(int32(4))}
	}
	s, err := c.startSwrk(extra)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, s.close()) }()

	c.log.Debug("criu dump", "pid", o.Pid, "dir", o.Dir)
	resp, err := s.call(ctx, &rpc.CriuReq{Type: ptr(rpc.CriuReqType_DUMP), Opts: opts})
	if err != nil || !resp.GetSuccess() {
		return nil, failure(ErrDump, resp, err, filepath.Join(o.Dir, "dump.log"))
	}
	ds, err := stats.CriuGetDumpStats(dir)
	if err != nil {
		// The dump itself succeeded; missing statistics are not fatal.
		c.log.Warn("criu dump statistics unreadable", "err", err)
		return &DumpStats{}, nil
	}
	us := func(v uint32) time.Duration { return time.Duration(v) * time.Microsecond }
	return &DumpStats{
		Freezing:     us(ds.GetFreezingTime()),
		Frozen:       us(ds.GetFrozenTime()),
		MemDump:      us(ds.GetMemdumpTime()),
		MemWrite:     us(ds.GetMemwriteTime()),
		PagesWritten: ds.GetPagesWritten(),
	}, nil
}
