package migration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/migrate"
)

// winsizeFD is where a job with a terminal reads its window sizes.
const winsizeFD = jobns.WinsizeFD

// NodeHost is the Host of a real node.
type NodeHost struct {
	// Node is this node's name, for refusals.
	Node string
	// Mountpoint is /cluster's ("" without it).
	Mountpoint string
	// Flush commits the home writes this node buffers (nil: none).
	Flush func(ctx context.Context) error
	// JobInit installs this node's copy of the job init if it is not
	// there yet: arriving processes run it.
	JobInit func() (string, error)
}

var _ Host = (*NodeHost)(nil)

// Describe reads the tree's mounts, credentials and outside files.
func (h *NodeHost) Describe(pid int) (Tree, error) {
	mounts, err := jobns.NodeMounts(pid)
	if err != nil {
		return Tree{}, fmt.Errorf("%w: its mounts: %v", fs.ErrCannotMove, err)
	}
	uid, gid, err := procCreds(pid)
	if err != nil {
		return Tree{}, fmt.Errorf("%w: %v", fs.ErrNoProcess, err)
	}
	shared := append([]string{h.Mountpoint + "/"}, jobns.OwnPrefixes()...)
	return Tree{UID: uid, GID: gid, Mounts: mounts, Files: migrate.OutsideFiles(pid, shared...)}, nil
}

// CheckArrival refuses a process whose node mounts or files this node
// lacks.
func (h *NodeHost) CheckArrival(hdr wire.StreamHeader) string {
	if err := checkNodeMounts(hdr.Mounts); err != nil {
		return fmt.Sprintf("%s cannot give the process its mounts: %v", h.Node, err)
	}
	// The job init arriving processes run is this node's copy of the
	// same build, made at start; made now if that failed.
	if h.JobInit != nil {
		_, _ = h.JobInit()
	}
	if missing := migrate.MissingFiles(hdr.Files); len(missing) > 0 {
		return fmt.Sprintf("%s lacks files the process uses: %s", h.Node, strings.Join(missing[:min(3, len(missing))], "; "))
	}
	return ""
}

func (h *NodeHost) FDKey(pid, fd int) string { return migrate.FDKey(pid, fd) }

func (h *NodeHost) Signal(pid int, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		_ = migrate.SignalTree(pid, s)
	}
}

func (h *NodeHost) FlushHome(ctx context.Context) error {
	if h.Flush == nil {
		return nil
	}
	return h.Flush(ctx)
}

// checkNodeMounts refuses node mounts a source names that this node
// lacks, or that are not node mounts at all.
func checkNodeMounts(mps []string) error {
	if len(mps) == 0 {
		return nil
	}
	here, err := jobns.MountPoints(os.Getpid())
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := jobns.ValidNodeMount(mp, here); err != nil {
			return err
		}
	}
	return nil
}

// procCreds reads the real uid and gid of pid: who its checkpoint runs as.
func procCreds(pid int) (uid, gid uint32, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	var got int
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseUint(f[1], 10, 32)
		switch {
		case f[0] == "Uid:" && perr == nil:
			uid, got = uint32(v), got|1
		case f[0] == "Gid:" && perr == nil:
			gid, got = uint32(v), got|2
		}
	}
	if got != 3 {
		return 0, 0, fmt.Errorf("no uid and gid in /proc/%d/status", pid)
	}
	return uid, gid, nil
}
