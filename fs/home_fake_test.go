package fs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// waitFor bounds every wait in these tests: a test that would hang fails
// with what it was waiting for instead.
const waitFor = 5 * time.Second

// memHome is a Home in memory: one replica, which "other nodes" change
// through put and remove. It counts barriers, lookups and writes; its writes land
// at once, fail with failWith's error, or, while hold is set, wait until
// the test lets each one land or fail.
type memHome struct {
	mu     sync.Mutex // protects the fields below
	inodes map[uint64]*memInode
	next   uint64
	landed [][]Extent // the writes that landed, in order
	fail   error      // every write fails with it while set

	fresh, lookups, writes atomic.Int64
	memHolds
}

// memHolds is how a test holds memHome's calls back: one call at a gate
// (holdNext), every write while hold is set (nextWrite, noWrite).
type memHolds struct {
	hold atomic.Bool
	held chan *heldWrite
	stop chan struct{} // closed at the test's end: held writes fail
	gate atomic.Pointer[gate]
}

// gate holds the first call of one Home method (op) until the test opens
// it. Like the agent's backend, a held call gives up when its context
// ends, and returns the context's error.
type gate struct {
	op      string
	used    atomic.Bool
	entered chan struct{} // closed when the call arrives
	caller  int           // the thread whose request made the call
	open    chan struct{} // closed by the test: the call goes on
	left    chan error    // the held call's answer to fs/
}

// holdNext makes the next call of op wait at a gate.
func (h *memHolds) holdNext(op string) *gate {
	g := &gate{op: op, entered: make(chan struct{}), open: make(chan struct{}), left: make(chan error, 1)}
	h.gate.Store(g)
	return g
}

// pass is where every method that takes a context meets the gate.
func (h *memHolds) pass(ctx context.Context, op string) error {
	g := h.gate.Load()
	if g == nil || g.op != op || !g.used.CompareAndSwap(false, true) {
		return nil
	}
	if c, ok := fuse.FromContext(ctx); ok {
		g.caller = int(c.Pid)
	}
	close(g.entered)
	var err error
	select {
	case <-g.open:
	case <-ctx.Done():
		err = ctx.Err()
	case <-h.stop:
		err = errStopped
	}
	g.left <- err
	return err
}

type memInode struct {
	attr   HomeAttr
	data   []byte
	kids   map[string]uint64
	target string
}

// heldWrite is a write waiting for the test's verdict.
type heldWrite struct {
	ino     uint64
	ext     []Extent
	verdict chan error
}

var errStopped = errors.New("test ended")

func newMemHome(t *testing.T) *memHome {
	h := &memHome{inodes: map[uint64]*memInode{1: {attr: HomeAttr{Ino: 1, Kind: HomeDir, Mode: 0o777, Nlink: 2},
		kids: map[string]uint64{}}}, next: 100,
		memHolds: memHolds{held: make(chan *heldWrite, 64), stop: make(chan struct{})}}
	t.Cleanup(func() { close(h.stop) })
	return h
}

// put makes or replaces file name in the root with data, as another
// node would; it returns the inode number.
func (h *memHome) put(name string, data string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	ino, ok := h.inodes[1].kids[name]
	if !ok {
		ino = h.next
		h.next++
		h.inodes[1].kids[name] = ino
		h.inodes[ino] = &memInode{attr: HomeAttr{Ino: ino, Kind: HomeFile, Mode: 0o666, Nlink: 1}}
	}
	in := h.inodes[ino]
	in.data = []byte(data)
	in.attr.Size = uint64(len(data))
	in.attr.Version++
	return ino
}

func (h *memHome) remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.inodes[1].kids, name)
}

func (h *memHome) content(ino uint64) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.inodes[ino].data)
}

func (h *memHome) failWith(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fail = err
}

func (h *memHome) landedOffsets() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []uint64
	for _, ext := range h.landed {
		out = append(out, ext[0].Off)
	}
	return out
}

// nextWrite returns the next held write.
func (h *memHolds) nextWrite(t *testing.T) *heldWrite {
	t.Helper()
	select {
	case w := <-h.held:
		return w
	case <-time.After(waitFor):
		t.Fatal("no write was sent")
		return nil
	}
}

// noWrite checks that no write is sent for a while: an absence has no
// event to wait for.
func (h *memHolds) noWrite(t *testing.T) {
	t.Helper()
	select {
	case w := <-h.held:
		t.Fatalf("a write at %d was sent early", w.ext[0].Off)
	case <-time.After(50 * time.Millisecond):
	}
}

func (w *heldWrite) land()          { w.verdict <- nil }
func (w *heldWrite) refuse(e error) { w.verdict <- e }

func (h *memHome) node(ino uint64) (*memInode, error) {
	in, ok := h.inodes[ino]
	if !ok {
		return nil, ErrNotFound
	}
	return in, nil
}

func (h *memHome) Lookup(parent uint64, name string) (HomeAttr, error) {
	if name != orphanDir { // the mount's sweeper looks for it at any time
		h.lookups.Add(1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ino, ok := h.inodes[parent].kids[name]
	if !ok {
		return HomeAttr{}, ErrNotFound
	}
	return h.inodes[ino].attr, nil
}

func (h *memHome) Getattr(ino uint64) (HomeAttr, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	in, err := h.node(ino)
	if err != nil {
		return HomeAttr{}, err
	}
	return in.attr, nil
}

func (h *memHome) Readdir(ino uint64) ([]HomeEntry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []HomeEntry
	for name, i := range h.inodes[ino].kids {
		out = append(out, HomeEntry{Name: name, Ino: i, Kind: h.inodes[i].attr.Kind})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (h *memHome) Read(ino, off uint64, dest []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	in, err := h.node(ino)
	if err != nil {
		return 0, err
	}
	if off >= uint64(len(in.data)) {
		return 0, nil
	}
	return copy(dest, in.data[off:]), nil
}

func (h *memHome) Readlink(ino uint64) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	in, err := h.node(ino)
	if err != nil {
		return "", err
	}
	return in.target, nil
}

func (h *memHome) Statfs() HomeUsage { return HomeUsage{} }

func (h *memHome) Fresh(ctx context.Context) error {
	h.fresh.Add(1)
	return h.pass(ctx, "Fresh")
}

func (h *memHome) Create(ctx context.Context, parent uint64, name string, kind HomeKind, mode, uid, gid uint32, target string) (HomeAttr, error) {
	if err := h.pass(ctx, "Create"); err != nil {
		return HomeAttr{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.inodes[parent].kids[name]; ok {
		return HomeAttr{}, ErrExists
	}
	ino := h.next
	h.next++
	in := &memInode{attr: HomeAttr{Ino: ino, Kind: kind, Mode: mode, UID: uid, GID: gid, Nlink: 1}, target: target}
	if kind == HomeDir {
		in.kids = map[string]uint64{}
	}
	h.inodes[ino] = in
	h.inodes[parent].kids[name] = ino
	return in.attr, nil
}

func (h *memHome) Write(ctx context.Context, ino uint64, ext []Extent) error {
	h.writes.Add(1)
	if err := h.pass(ctx, "Write"); err != nil {
		return err
	}
	if err := h.verdict(ino, ext); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	in, err := h.node(ino)
	if err != nil {
		return err
	}
	for _, e := range ext {
		if end := e.Off + uint64(len(e.Data)); end > uint64(len(in.data)) {
			in.data = append(in.data, make([]byte, end-uint64(len(in.data)))...)
		}
		copy(in.data[e.Off:], e.Data)
	}
	in.attr.Size = uint64(len(in.data))
	in.attr.Version++
	h.landed = append(h.landed, ext)
	return nil
}

// verdict is whether a write may land: at once, or when the test says.
func (h *memHome) verdict(ino uint64, ext []Extent) error {
	h.mu.Lock()
	fail := h.fail
	h.mu.Unlock()
	if fail != nil {
		return fail
	}
	if !h.hold.Load() {
		return nil
	}
	return h.holdWrite(ino, ext)
}

// holdWrite hands a write to the test and waits for its verdict.
func (h *memHolds) holdWrite(ino uint64, ext []Extent) error {
	w := &heldWrite{ino: ino, ext: ext, verdict: make(chan error, 1)}
	select {
	case h.held <- w:
	case <-h.stop:
		return errStopped
	}
	select {
	case err := <-w.verdict:
		return err
	case <-h.stop:
		return errStopped
	}
}

func (h *memHome) SetAttr(ctx context.Context, ino uint64, a HomeSetAttr) error {
	if err := h.pass(ctx, "SetAttr"); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fail != nil {
		return h.fail
	}
	in, err := h.node(ino)
	if err != nil {
		return err
	}
	if a.Size != nil {
		in.data = append(in.data, make([]byte, max(0, int(*a.Size)-len(in.data)))...)[:*a.Size]
		in.attr.Size = *a.Size
		in.attr.Version++
	}
	if a.Mode != nil {
		in.attr.Mode = *a.Mode
	}
	return nil
}

func (h *memHome) Link(context.Context, uint64, uint64, string) (HomeAttr, error) {
	return HomeAttr{}, ErrNotImplemented
}

func (h *memHome) Unlink(ctx context.Context, parent uint64, name string) error {
	if err := h.pass(ctx, "Unlink"); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.inodes[parent].kids[name]; !ok {
		return ErrNotFound
	}
	delete(h.inodes[parent].kids, name)
	return nil
}

func (h *memHome) Rmdir(ctx context.Context, parent uint64, name string) error {
	return h.Unlink(ctx, parent, name)
}

func (h *memHome) Rename(ctx context.Context, op uint64, on string, np uint64, nn string) error {
	if err := h.pass(ctx, "Rename"); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ino, ok := h.inodes[op].kids[on]
	if !ok {
		return ErrNotFound
	}
	delete(h.inodes[op].kids, on)
	h.inodes[np].kids[nn] = ino
	return nil
}

func (h *memHome) Node() string { return "n1" }

// homeTree serves h without a mount: go-fuse's node tree, whose methods
// the tests call as the kernel would.
func homeTree(h Home) (*homeFS, *homeNode) {
	f := newHomeFS(h)
	root := &homeNode{fs: f, ino: 1}
	gofs.NewNodeFS(root, &gofs.Options{})
	return f, root
}

// hlookup returns the node of name under dir.
func hlookup(t *testing.T, dir *homeNode, name string) (*homeNode, fuse.EntryOut) {
	t.Helper()
	var out fuse.EntryOut
	in, e := dir.Lookup(context.Background(), name, &out)
	if e != 0 {
		t.Fatalf("lookup %s: %v", name, e)
	}
	return in.Operations().(*homeNode), out
}

func hopen(t *testing.T, n *homeNode, flags uint32) *homeHandle {
	t.Helper()
	fh, _, e := n.Open(context.Background(), flags)
	if e != 0 {
		t.Fatalf("open: %v", e)
	}
	return fh.(*homeHandle)
}

func hsize(t *testing.T, n *homeNode) uint64 {
	t.Helper()
	var out fuse.AttrOut
	if e := n.Getattr(context.Background(), nil, &out); e != 0 {
		t.Fatalf("getattr: %v", e)
	}
	return out.Size
}

func hread(t *testing.T, n *homeNode, off int64, length int) string {
	t.Helper()
	dest := make([]byte, length)
	r, e := n.Read(context.Background(), nil, dest, off)
	if e != 0 {
		t.Fatalf("read: %v", e)
	}
	b, _ := r.Bytes(nil)
	return string(b)
}

func hwrite(t *testing.T, n *homeNode, h *homeHandle, off int64, data string) syscall.Errno {
	t.Helper()
	got, e := n.Write(context.Background(), h, []byte(data), off)
	if e == 0 && int(got) != len(data) {
		t.Fatalf("wrote %d of %d bytes", got, len(data))
	}
	return e
}

// start runs fn in the background; await waits for its answer.
func start(fn func() error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- fn() }()
	return c
}

func await(t *testing.T, what string, c <-chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(waitFor):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// eventually polls cond until it holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// failed waits until b has recorded n failures and nothing is on its way
// (a flight records its failure just before it ends).
func failed(t *testing.T, b *batch, n uint64) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d failures recorded", n), func() bool { return b.seqNow() == n && b.quiet() })
}
