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
	return Tree{UID: uid, GID: gid, Mounts: mounts, Files: migrate.OutsideFiles(pid)}, nil
}

// CheckArrival refuses a process whose node mounts this node lacks, or
// whose files it cannot give back: as the owner's rights here allow,
// without following a link, the same kind (and under /cluster the same
// inode). The restore checks again, definitively (FileCheck).
func (h *NodeHost) CheckArrival(hdr wire.StreamHeader) string {
	if err := checkNodeMounts(hdr.Mounts); err != nil {
		return fmt.Sprintf("%s cannot give the process its mounts: %v", h.Node, err)
	}
	// The job init arriving processes run is this node's copy of the
	// same build, made at start; made now if that failed.
	if h.JobInit != nil {
		_, _ = h.JobInit()
	}
	bad := migrate.CheckFiles(hdr.Files, migrate.UserCred(uint32(hdr.UID)), h.FileCheck(uint32(hdr.UID)).Shared,
		h.TrustedFiles())
	if len(bad) > 0 {
		return fmt.Sprintf("%s cannot give the process its files: %s", h.Node, strings.Join(bad[:min(3, len(bad))], "; "))
	}
	return ""
}

// FileCheck is how a restore here checks the files of uid's arriving
// process (see migrate.FileCheck).
func (h *NodeHost) FileCheck(uid uint32) *migrate.FileCheck {
	fc := &migrate.FileCheck{UID: uid, Trusted: h.TrustedFiles()}
	if h.Mountpoint != "" {
		fc.Shared = h.Mountpoint + "/"
	}
	return fc
}

// TrustedFiles are this node's own files that arriving processes hold
// and their owners may not open themselves: the job init, in the
// agent's data directory.
func (h *NodeHost) TrustedFiles() []string {
	if h.JobInit == nil {
		return nil
	}
	if p, err := h.JobInit(); err == nil {
		return []string{p}
	}
	return nil
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
