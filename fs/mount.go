package fs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"ssi/fs/mountinfo"
)

// Options configure the mount.
type Options struct {
	Mountpoint string
	// AttrTimeout and EntryTimeout are how long the kernel may cache the
	// attributes and names of /cluster/proc, /cluster/nodes and
	// /cluster/admin: 0 (the default, one truth on every node) is never.
	// Their contents, the home's entries and attributes and failed
	// lookups anywhere are never cached, whatever these say (cache.go).
	AttrTimeout  time.Duration
	EntryTimeout time.Duration
	// Home serves /cluster/home; nil leaves it out.
	Home Home
	// HomePath, if set, serves this existing directory (a shared mount:
	// NFS, CephFS, ...) as /cluster/home instead of Home. Every change is
	// made as the caller, with the underlying file system's semantics,
	// and no symlink in it is ever followed (loopback.go).
	HomePath string
	Log      *slog.Logger
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		o.Log.Warn(fmt.Sprintf(format, args...))
	}
}

// Mounted is a live /cluster.
type Mounted struct {
	srv        *fuse.Server
	mountpoint string
	home       *homeFS // nil unless the home is served by Options.Home
	conn       uint32  // the kernel's number for the connection
	logf       func(format string, args ...any)
	done       chan struct{} // closed by Unmount: stops background work
}

// FlushHome commits every byte written to /cluster/home on this node and
// not yet committed, waiting for what is on its way too, and returns the
// first failure of those commits. Each failure also stays recorded for
// the writers' next write, fsync and close. An older failure that a
// writer has not heard of yet is not returned: it is that writer's, and
// one user's failed write must not hold back every move of the node.
// nil means every byte still buffered here is now on a quorum, so
// another node sees it.
//
// The agent calls it after a process was frozen for a move and before
// the destination restores it: the process's appends are then durable
// and visible there. It is safe while other files are being written;
// without a Home (HomePath, or no home) there is nothing to commit.
func (m *Mounted) FlushHome(ctx context.Context) error {
	if m.home == nil {
		return nil
	}
	return m.home.flushAll(ctx)
}

// Mount serves v at o.Mountpoint. A mount left there by an agent that
// crashed (its server gone: "transport endpoint is not connected") is
// detached first.
func Mount(v View, o Options) (*Mounted, error) {
	if err := prepareMountpoint(&o); err != nil {
		return nil, err
	}
	root, err := newRootNode(v, &o)
	if err != nil {
		return nil, err
	}
	// No timeouts here: each node sets its own, and no failed lookup is
	// kept (cache.go).
	srv, err := gofs.Mount(o.Mountpoint, root, fuseOptions())
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", o.Mountpoint, err)
	}
	if err := setReadAhead(o.Mountpoint, readAheadKB); err != nil {
		o.logf("read-ahead of %s stays at the kernel's default: %v", o.Mountpoint, err)
	}
	m := &Mounted{srv: srv, mountpoint: o.Mountpoint, home: root.home, logf: o.logf, done: make(chan struct{})}
	if st, err := os.Stat(o.Mountpoint); err == nil {
		m.conn = unix.Minor(st.Sys().(*syscall.Stat_t).Dev)
	}
	if root.home != nil {
		go root.home.sweepOrphans(m.done)
	}
	return m, nil
}

// prepareMountpoint creates o.Mountpoint if missing and detaches a stale
// mount found there.
func prepareMountpoint(o *Options) error {
	if err := os.MkdirAll(o.Mountpoint, 0o755); err != nil && !isStale(o.Mountpoint) {
		return fmt.Errorf("mountpoint %s: %w", o.Mountpoint, err)
	}
	if mountinfo.Mounted(o.Mountpoint) {
		o.logf("replacing a stale mount at %s", o.Mountpoint)
		if err := unix.Unmount(o.Mountpoint, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("removing the stale mount at %s: %w", o.Mountpoint, err)
		}
	}
	return nil
}

// newRootNode is the root of /cluster over v, with the home o asks for
// (a directory's loopback, a Home, or none).
func newRootNode(v View, o *Options) (*rootNode, error) {
	root := &rootNode{view: v, cfg: o, cache: cacheTimes{attr: o.AttrTimeout, entry: o.EntryTimeout}}
	switch {
	case o.HomePath != "":
		lb, err := newPathHome(o.HomePath)
		if err != nil {
			return nil, fmt.Errorf("home.path %s: %w", o.HomePath, err)
		}
		root.homePath = lb
	case o.Home != nil:
		root.home = newHomeFS(o.Home)
		root.home.logf = o.logf
	}
	return root, nil
}

// fuseOptions are the mount's options, the same on every node.
func fuseOptions() *gofs.Options {
	return &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "ssi", Name: "cluster",
			// Every user of the node sees the cluster; writes are checked
			// per caller by the handlers.
			AllowOther:  true,
			DirectMount: true,
			// The kernel checks permissions from the modes and owners we
			// report, as on a local file system (root and owners may
			// chmod, chown is root's, ...).
			Options: []string{"default_permissions"},
			// Larger writes and reads (max_pages follows): fewer
			// requests per batch and per read-ahead window.
			MaxWrite: 1 << 20,
			// READDIRPLUS makes go-fuse look up every entry of a listing,
			// one after another within the request (bridge.go,
			// readDirMaybeLookup): in the home, one barrier per entry
			// before the listing returns. It buys nothing here: every
			// entry it returns has timeout 0, so the kernel looks each
			// name up again at its first stat anyway. Nor may those
			// lookups skip the barrier: go-fuse tells them from others
			// only by the directory handle, and a listing read in
			// several requests passed its barrier at the first. Plain
			// READDIR passes one barrier per listing. Measured on a fake
			// home of 100 files (TestMountedHomeListing): listing them,
			// 102 barriers and 100 lookups with READDIRPLUS, 2 and 0
			// without; `ls -l` (coreutils 9.1), 804 barriers with it, 704
			// without (504 once the home answers getxattr with ENOSYS).
			DisableReadDirPlus: true,
			// With AUTO_INVAL_DATA the kernel asks for a file's attributes
			// before every read (fuse_cache_read_iter): with attribute
			// timeouts of 0, one barrier per read(2); reading 512 MiB with
			// dd bs=1M passed 517. The kernel's pages follow the data's
			// version at open instead (FOPEN_KEEP_CACHE, cacheFlags): an
			// open without it drops them, explicit mode or not.
			ExplicitDataCacheControl: true,
		},
	}
}

// Unmount detaches the file system and waits (briefly) for its server to
// stop. A mount kept busy is detached lazily, so that a shell whose cwd is
// inside does not keep the agent from stopping.
func (m *Mounted) Unmount() error {
	select {
	case <-m.done:
	default:
		close(m.done)
	}
	res := make(chan error, 1)
	go func() { res <- m.srv.Unmount() }()
	var err error
	select {
	case err = <-res:
	case <-time.After(stopWait):
		// go-fuse's Unmount waits without bound for the kernel to end
		// the connection after the umount. It does not while another
		// mount namespace holds a copy of the mount (one made while it
		// was mounted: a container, a lab node): seen as a test hung
		// for minutes.
		if !mountinfo.Mounted(m.mountpoint) {
			m.abandon()
			return nil
		}
		err = fmt.Errorf("unmount timed out")
	}
	if err != nil {
		// Busy (a shell's cwd is inside): detach it from the tree; the
		// kernel ends the connection when the last user leaves.
		err = unix.Unmount(m.mountpoint, unix.MNT_DETACH)
	}
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopWait):
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	return nil
}

// stopWait bounds each wait of Unmount for the server to stop.
const stopWait = 5 * time.Second

// abandon ends the connection of a mount that is gone from here but lives
// on elsewhere, through the fuse control file system where it is mounted;
// otherwise what is left ends with this process.
func (m *Mounted) abandon() {
	abort := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", m.conn)
	if err := os.WriteFile(abort, []byte("1"), 0o200); err != nil {
		m.logf("%s is unmounted here, but another mount namespace holds a copy that this agent serves until it exits: %v", m.mountpoint, err)
	}
}

// readAheadKB is the kernel's read-ahead on /cluster: a FUSE mount gets
// 128 KiB, so a sequential reader waits for one small request after
// another; with 4 MiB in flight the home's cold reads run faster
// (measured reading 1 GiB on one node, runs interleaved with the previous
// binary: 1.8-2.0 -> 2.4-2.8 GB/s).
const readAheadKB = 4096

// setReadAhead sets the read-ahead of the file system mounted at dir,
// through its backing device info in sysfs (the FUSE INIT reply cannot
// raise it above the kernel's default).
func setReadAhead(dir string, kb int) error {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	return os.WriteFile(p, []byte(fmt.Sprint(kb)), 0o644)
}

// isStale reports a mount point whose FUSE server is gone.
func isStale(path string) bool {
	_, err := os.Stat(path)
	return err != nil && strings.Contains(err.Error(), "not connected")
}
