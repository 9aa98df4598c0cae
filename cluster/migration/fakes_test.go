package migration_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"ssi/cluster/api"
	"ssi/cluster/migration"
	"ssi/cluster/stdio"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/migrate"
	"ssi/raftstore"
)

// The fakes stand in for the world a Mover reaches through deps.go. The
// processes they freeze, resume, restore and kill are real children of
// the test: what counts is which of them run.

// What a fake dump writes: a checkpoint (inventory.img), a core image
// bigger than one read of the stream, so that a cut can fall inside it,
// the pages (into the images, or to the page server) and a log that
// must stay behind.
const (
	inventorySize = 64
	coreSize      = 96 << 10
	pagesSize     = 4 << 10
	imageBytes    = inventorySize + coreSize + pagesSize
)

// fakeCRIU is a node's Checkpointer. Its dump freezes the real process
// and writes the images; its restore checks that they all arrived and
// starts a new real process, stopped as CRIU leaves a tree asked to
// stay stopped; its page server stores what the relay brings.
type fakeCRIU struct {
	h    *harness
	node string

	// Knobs, set before a move starts.
	noPageServer bool
	dumpErr      error         // CRIU fails with the tree frozen, and leaves it so
	restoreErr   error         // CRIU's restore fails: nothing is restored
	onRestore    func()        // the world changes as the restore starts
	dumpGate     chan struct{} // when set, a dump waits for it to close

	mu       sync.Mutex
	dumps    int   // dumps started (each freezes the tree)
	restores int   // restores started
	served   int64 // bytes the page server stored
}

func (c *fakeCRIU) counts() (dumps, restores int, served int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dumps, c.restores, c.served
}

func (c *fakeCRIU) Dump(ctx context.Context, o migrate.DumpOptions) (*migrate.DumpStats, error) {
	if c.dumpGate != nil {
		select {
		case <-c.dumpGate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c.mu.Lock()
	c.dumps++
	c.mu.Unlock()
	if err := freeze(o.Pid); err != nil {
		return nil, err
	}
	// As CRIU: /cluster is a FUSE mount it cannot dump, so it must be
	// left behind as a node mount.
	if !slices.Contains(o.NodeMounts, mountpoint) {
		return nil, fmt.Errorf("criu: cannot dump the fuse mount %s", mountpoint)
	}
	if c.dumpErr != nil {
		return nil, c.dumpErr
	}
	if err := writeImages(o.Dir, o.PageServer == nil); err != nil {
		return nil, err
	}
	if o.PageServer != nil {
		if err := sendPages(o.PageServer); err != nil {
			return nil, fmt.Errorf("criu: page server: %w", err)
		}
	}
	if !o.LeaveStopped {
		// CRIU kills a tree it was not asked to leave stopped.
		c.h.signal(o.Pid, syscall.SIGKILL)
	}
	return &migrate.DumpStats{}, nil
}

// sendPages is CRIU's dump talking to the page server: the pages, then
// it waits for the server's answer, which comes back through the relays.
func sendPages(ps *os.File) error {
	if _, err := ps.Write(bytes.Repeat([]byte{'p'}, pagesSize)); err != nil {
		return err
	}
	_, err := io.ReadFull(ps, make([]byte, 1))
	return err
}

func writeImages(dir string, withPages bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := map[string]int{"inventory.img": inventorySize, "core-1.img": coreSize, "dump.log": 100}
	if withPages {
		files["pages-1.img"] = pagesSize
	}
	for name, size := range files {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{'i'}, size), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// checkImages is CRIU's restore finding its images: every one complete
// (the pages came with them or through the page server), the dump's log
// left behind.
func checkImages(dir string) error {
	for name, size := range map[string]int64{"inventory.img": inventorySize, "core-1.img": coreSize, "pages-1.img": pagesSize} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("criu: %w", err)
		}
		if fi.Size() != size {
			return fmt.Errorf("criu: %s has %d bytes, want %d", name, fi.Size(), size)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "dump.log")); err == nil {
		return errors.New("criu: the dump's log travelled with the images")
	}
	return nil
}

func (c *fakeCRIU) Restore(ctx context.Context, o migrate.RestoreOptions) (*migrate.Restored, error) {
	c.mu.Lock()
	c.restores++
	c.mu.Unlock()
	if c.onRestore != nil {
		c.onRestore()
	}
	if c.restoreErr != nil {
		return nil, c.restoreErr
	}
	if err := checkImages(o.Dir); err != nil {
		return nil, err
	}
	cp, err := c.h.spawn(c.node, o.LeaveStopped)
	if err != nil {
		return nil, err
	}
	return &migrate.Restored{Pid: cp.cmd.Process.Pid}, nil
}

// StartPageServer serves as CRIU's page server would, from a copy of
// sock of its own: it stores the pages, answers, stores anything more
// until the relay shuts its end, then closes its copy, which ends the
// relay.
func (c *fakeCRIU) StartPageServer(ctx context.Context, dir string, sock *os.File) (int, error) {
	if c.noPageServer {
		return 0, errors.New("criu: no page server here")
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return 0, err
	}
	fd, derr := -1, error(nil)
	// Close-on-exec: a process restored later must not hold it open.
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return 0, err
	}
	if derr != nil {
		return 0, derr
	}
	f := os.NewFile(uintptr(fd), "page-server")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.Close()
		return 0, err
	}
	out, err := os.Create(filepath.Join(dir, "pages-1.img"))
	if err != nil {
		f.Close()
		return 0, err
	}
	c.h.wg.Go(func() {
		defer f.Close()
		defer out.Close()
		n, err := io.CopyN(out, f, pagesSize)
		if err == nil {
			_, err = f.Write([]byte{'a'})
		}
		if err == nil {
			var more int64
			more, _ = io.Copy(out, f)
			n += more
		}
		c.mu.Lock()
		c.served += n
		c.mu.Unlock()
	})
	return 0, nil
}

// fakeHost is a node's Host.
type fakeHost struct {
	h      *harness
	refuse string                          // CheckArrival's answer
	flush  func(ctx context.Context) error // FlushHome (nil: nothing buffered)
}

func (h *fakeHost) Describe(pid int) (migration.Tree, error) {
	return migration.Tree{UID: owner, GID: owner, Mounts: []string{mountpoint}}, nil
}

func (h *fakeHost) CheckArrival(hdr wire.StreamHeader) string { return h.refuse }

func (h *fakeHost) FileCheck(uint32) *migrate.FileCheck { return nil }

func (h *fakeHost) FDKey(pid, fd int) string { return fmt.Sprintf("pipe:[%d]", pid*10+fd) }

func (h *fakeHost) Signal(pid int, sig os.Signal) { h.h.signal(pid, sig.(syscall.Signal)) }

func (h *fakeHost) FlushHome(ctx context.Context) error {
	if h.flush == nil {
		return nil
	}
	return h.flush(ctx)
}

// fakeJobs is a node's job table: jobs whose processes are real
// children of the test, and the records the next agent would read.
type fakeJobs struct {
	h        *harness
	mu       sync.Mutex
	jobs     map[int]*fakeJob
	cantMove string
	failed   map[int]string
	records  map[int]record
}

// record is what a job's record tells the next agent of its node.
type record struct {
	pid      int
	arriving bool
}

func newFakeJobs(h *harness) *fakeJobs {
	return &fakeJobs{h: h, jobs: map[int]*fakeJob{}, failed: map[int]string{}, records: map[int]record{}}
}

func (js *fakeJobs) add(cpid, pid int) *fakeJob {
	js.mu.Lock()
	defer js.mu.Unlock()
	j := &fakeJob{h: js.h, cpid: cpid, pid: pid}
	js.jobs[cpid] = j
	return j
}

func (js *fakeJobs) Job(cpid int) (migration.Job, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	j, ok := js.jobs[cpid]
	if !ok {
		return nil, false
	}
	return j, true
}

func (js *fakeJobs) CantMove(j migration.Job) string { return js.cantMove }

func (js *fakeJobs) Failed(cpid int, why string) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.failed[cpid] = why
}

func (js *fakeJobs) failure(cpid int) string {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.failed[cpid]
}

func (js *fakeJobs) Record(cpid, pid int, arriving bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.records[cpid] = record{pid: pid, arriving: arriving}
}

func (js *fakeJobs) Forget(cpid int) {
	js.mu.Lock()
	defer js.mu.Unlock()
	delete(js.records, cpid)
}

func (js *fakeJobs) record(cpid int) (record, bool) {
	js.mu.Lock()
	defer js.mu.Unlock()
	r, ok := js.records[cpid]
	return r, ok
}

// Land makes the restored copy a job here and lets it run, as
// jobs.Table.Land does.
func (js *fakeJobs) Land(cpid int, proc *os.Process, p *stdio.Pipes, home string, st *stdio.State) {
	js.add(cpid, proc.Pid)
	js.h.signal(proc.Pid, syscall.SIGCONT)
}

func (js *fakeJobs) WaitAdoption(ctx context.Context) error { return nil }

// fakeJob is a job of a node; its process is a real child.
type fakeJob struct {
	h         *harness
	cpid, pid int
	mu        sync.Mutex
	moving    bool
	gone      bool
}

func (j *fakeJob) CPID() int             { return j.cpid }
func (j *fakeJob) Pid() int              { return j.pid }
func (j *fakeJob) Holder() *stdio.Holder { return nil }

func (j *fakeJob) BeginMove() (func(), error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.moving || j.gone {
		return nil, fmt.Errorf("%w: process %d is moving", fs.ErrBusy, j.cpid)
	}
	j.moving = true
	return func() {
		j.mu.Lock()
		defer j.mu.Unlock()
		j.moving = false
	}, nil
}

func (j *fakeJob) setMoving() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.moving = true
}

func (j *fakeJob) Finish() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.gone = true
	j.h.signal(j.pid, syscall.SIGKILL)
}

// fakeCluster is a node's view of the cluster: the one store every node
// shares, and in-process streams and calls to the other nodes.
type fakeCluster struct {
	h          *harness
	n          *node
	storeErr   error // Store fails: not a member yet
	catchUpErr error // CatchUp fails: the leader is out of reach
	dialErr    error // DialMigrate fails
	callErr    error // Call fails
	// afterApply sees every command applied through this node.
	afterApply func(cmd raftstore.Command, err error)

	mu   sync.Mutex
	hold chan struct{} // non-nil: MigrationEnd fails, as without a quorum
	held chan struct{} // told of each MigrationEnd that failed so
}

// holdEnds makes every MigrationEnd through this node fail until
// releaseEnds: the node has lost its quorum.
func (c *fakeCluster) holdEnds() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = make(chan struct{})
}

func (c *fakeCluster) releaseEnds() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold != nil {
		close(c.hold)
		c.hold = nil
	}
}

func (c *fakeCluster) holding() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hold != nil
}

func (c *fakeCluster) Store() (*raftstore.Store, error) {
	if c.storeErr != nil {
		return nil, c.storeErr
	}
	return c.h.store, nil
}

func (c *fakeCluster) Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error) {
	if _, end := cmd.(raftstore.MigrationEnd); end && c.holding() {
		select {
		case c.held <- struct{}{}:
		default:
		}
		return nil, fmt.Errorf("apply migration end: %w", raftstore.ErrNoLeader)
	}
	res, err := c.h.store.Apply(ctx, cmd)
	if c.afterApply != nil {
		c.afterApply(cmd, err)
	}
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

func (c *fakeCluster) Fresh(ctx context.Context) (bool, error) { return false, nil }

func (c *fakeCluster) CatchUp(ctx context.Context) error { return c.catchUpErr }

func (c *fakeCluster) DialMigrate(ctx context.Context, node string) (net.Conn, error) {
	if c.dialErr != nil {
		return nil, c.dialErr
	}
	return c.h.dial(c.n, node)
}

// Call is a peer's /v1/migrate: the other node's Mover, its error
// carried by errno name as between agents.
func (c *fakeCluster) Call(ctx context.Context, node, path string, in, out any) error {
	if c.callErr != nil {
		return c.callErr
	}
	req, ok := in.(api.MigrateRequest)
	if !ok || path != "/v1/migrate" {
		return fmt.Errorf("unexpected call %s %T", path, in)
	}
	err := c.h.node(node).mover.Migrate(ctx, req.CPID, req.Target, req.UID)
	if err != nil {
		return api.FromErrno(fs.ErrnoName(err), err.Error())
	}
	return nil
}

// tap is one node's end of a migration stream. It follows the frames
// the node reads, so that a test can cut the stream, or end the node's
// agent, exactly as a given frame arrives.
type tap struct {
	net.Conn
	at   func(wire.Frame) (cut bool)
	hdr  [5]byte
	have int    // bytes of the current frame's header read
	left uint32 // bytes of the current frame's payload still to come
}

var errCut = errors.New("stream cut")

func (c *tap) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.at != nil && c.scan(p[:n]) {
		c.Conn.Close()
		return 0, errCut
	}
	return n, err
}

// scan follows p through the frames and asks at about each frame that
// begins in it.
func (c *tap) scan(p []byte) (cut bool) {
	for len(p) > 0 {
		if c.left > 0 {
			n := min(uint32(len(p)), c.left)
			c.left -= n
			p = p[n:]
			continue
		}
		c.hdr[c.have] = p[0]
		c.have++
		p = p[1:]
		if c.have == len(c.hdr) {
			c.have = 0
			c.left = binary.BigEndian.Uint32(c.hdr[1:])
			if c.at(wire.Frame(c.hdr[0])) {
				return true
			}
		}
	}
	return false
}

// cutAt cuts a stream as the node reads a frame of type f.
func cutAt(f wire.Frame) func(wire.Frame) bool {
	return func(got wire.Frame) bool { return got == f }
}
