package fs

import (
	"context"
	"sync"
)

// maxBatch is how much written data a node gathers before it commits it
// as one entry: one Raft entry per FUSE write would be slow.
const maxBatch = 1 << 20

// maxExtents also ends a batch: scattered small writes make many extents,
// and an entry holds at most 65536 of them.
const maxExtents = 4096

// maxFlight bounds the full batches of one inode that are on their way
// to the quorum at once. While they travel, the writer goes on filling the
// next one, and the leader stores several in one log write (group
// commit): measured writing 384 MiB three times on one node, 25/46/64
// MB/s one at a time, 39/76/101 with 8, 50-66/91-137/96-156 with 16.
const maxFlight = 16

// batch is what this node wrote to one inode and has not yet seen land,
// and the inode's error sequence.
//
// Writes are the writer's: buffered data is committed only by a writer's
// own write (a full batch), fsync, close and release, by a truncate (which
// must come after it) and by Mounted.FlushHome. Lookups, stats and reads
// of other processes never commit; they see the buffered and travelling
// bytes (size and contents) from here instead, so that this node reads
// its own writes and O_APPEND lands after them.
//
// A failure is never dropped nor told to a bystander: it bumps seq, and
// each handle open then reports it once (Linux's errseq_t): a writer on
// its next write, fsync or close, a reader on its next fsync (a reader's
// close commits nothing and reports nothing, as on NFS). A handle opened
// later does not see it. What was buffered after the failed batch is
// still committed: the writers know the file may have lost bytes, and
// dropping more would not give it back.
type batch struct {
	// wmu serialises the inode's writers: appends, sends and commits. It
	// is held while a writer waits for flights (that is what orders
	// overlapping batches), so readers never take it.
	wmu sync.Mutex

	// mu protects the fields below and the handles' seen; it is never
	// held while waiting for the quorum, so readers do not wait for one.
	mu      sync.Mutex
	extents []Extent // buffered, in write order; changed only under wmu too
	size    int
	flying  []*flight                // sent, oldest first; changed only under wmu too
	seq     uint64                   // failures so far
	err     error                    // the latest failure
	writers map[*homeHandle]struct{} // open writer handles: see unseen

	handles int // open handles on this node; protected by homeFS.mu
}

// flight is one batch on its way to the quorum.
type flight struct {
	lo, hi uint64 // the bytes it writes lie in [lo, hi)
	ext    []Extent
	done   chan struct{} // closed once it landed or its failure is recorded
}

// span returns the range that holds every byte ext writes.
func span(ext []Extent) (lo, hi uint64) {
	lo = ^uint64(0)
	for _, e := range ext {
		lo, hi = min(lo, e.Off), max(hi, e.Off+uint64(len(e.Data)))
	}
	return lo, hi
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// batch returns ino's batch, or nil when this node neither holds it open
// nor has anything of it on the way.
func (f *homeFS) batch(ino uint64) *batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending[ino]
}

// opened counts a new handle of ino on this node and returns the inode's
// batch: every handle of one inode shares one, so that writes stay in
// order and a failure reaches all of them.
func (f *homeFS) opened(ino uint64) *batch {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.pending[ino]
	if b == nil {
		b = &batch{writers: map[*homeHandle]struct{}{}}
		f.pending[ino] = b
	}
	b.handles++
	return b
}

// detach forgets a handle of ino and reports whether it was the last one.
// The batch goes with the last handle unless something is still on its
// way (then the next open or FlushHome finds it).
func (f *homeFS) detach(ino uint64) (last bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.pending[ino]
	if b == nil {
		return true
	}
	b.handles--
	if b.handles > 0 {
		return false
	}
	if b.quiet() {
		delete(f.pending, ino)
	}
	return true
}

// quiet reports that nothing is buffered or on its way.
func (b *batch) quiet() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.quietLocked()
}

func (b *batch) quietLocked() bool {
	if len(b.extents) > 0 {
		return false
	}
	for _, fl := range b.flying {
		if !isDone(fl.done) {
			return false
		}
	}
	return true
}

// handle makes an open handle of ino that has seen every failure so far.
func (b *batch) handle(ino uint64, writer bool) *homeHandle {
	b.mu.Lock()
	defer b.mu.Unlock()
	h := &homeHandle{ino: ino, b: b, writer: writer, seen: b.seq}
	if writer {
		b.writers[h] = struct{}{}
	}
	return h
}

func (b *batch) drop(h *homeHandle) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.writers, h)
}

// fail records a failure for every handle open now.
func (b *batch) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	b.err = err
}

// check returns, once per handle, the latest failure it has not seen.
func (b *batch) check(h *homeHandle) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if h.seen == b.seq {
		return nil
	}
	h.seen = b.seq
	return b.err
}

// add queues data; a full batch is sent.
func (f *homeFS) add(ctx context.Context, ino uint64, b *batch, off uint64, data []byte) {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	b.reap()
	b.mu.Lock()
	b.appendLocked(off, data)
	full := b.size >= maxBatch || len(b.extents) >= maxExtents
	b.mu.Unlock()
	if full {
		f.sendLocked(ctx, ino, b)
	}
}

func (b *batch) appendLocked(off uint64, data []byte) {
	b.size += len(data)
	if n := len(b.extents); n > 0 {
		if last := &b.extents[n-1]; last.Off+uint64(len(last.Data)) == off {
			last.Data = append(last.Data, data...)
			return
		}
	}
	// A large write starts what is likely a sequential batch: room for the
	// whole batch now saves copying it again at each doubling.
	buf := make([]byte, 0, len(data))
	if len(data) >= 64<<10 && len(b.extents) == 0 {
		buf = make([]byte, 0, max(len(data), maxBatch))
	}
	b.extents = append(b.extents, Extent{Off: off, Data: append(buf, data...)})
}

// sendLocked (wmu held) sends the buffered extents without waiting for
// their commit, once no earlier flight writes the same bytes and fewer
// than maxFlight travel. A failure is recorded in the error sequence.
func (f *homeFS) sendLocked(ctx context.Context, ino uint64, b *batch) {
	// Batches that may write the same bytes must reach the log in order:
	// the later one waits. Spans keep the check cheap; scattered writes
	// overlap and so go one batch at a time, sequential ones do not. The
	// extents stay buffered (readers see them) until they fly.
	lo, hi := span(b.extents)
	for i := len(b.flying) - 1; i >= 0; i-- {
		if fl := b.flying[i]; fl.lo < hi && lo < fl.hi {
			_ = b.wait(context.Background(), i+1) // cannot end early
			break
		}
	}
	if len(b.flying) >= maxFlight {
		_ = b.wait(context.Background(), len(b.flying)-maxFlight+1) // cannot end early
	}
	fl := &flight{lo: lo, hi: hi, done: make(chan struct{})}
	b.mu.Lock()
	fl.ext = b.extents
	b.extents, b.size = nil, 0
	b.flying = append(b.flying, fl)
	b.mu.Unlock()
	// The request's context ends with this write; the batch outlives it
	// and the backend bounds how long it waits.
	ctx = context.WithoutCancel(ctx)
	go func() {
		if err := f.h.Write(ctx, ino, fl.ext); err != nil {
			b.fail(err) // before done: whoever waits for it finds it recorded
		}
		close(fl.done)
	}()
}

// wait (wmu held) waits for the oldest n flights and forgets them. It
// gives up when ctx ends, returning its error: the flights go on, and
// their failures are recorded all the same.
func (b *batch) wait(ctx context.Context, n int) error {
	waited := 0
	defer func() {
		b.mu.Lock()
		b.flying = append(b.flying[:0], b.flying[waited:]...)
		b.mu.Unlock()
	}()
	for _, fl := range b.flying[:n] {
		select {
		case <-fl.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		waited++
	}
	return nil
}

// reap (wmu held) forgets the oldest flights that landed, keeping the
// list short; their failures are already recorded.
func (b *batch) reap() {
	n := 0
	for n < len(b.flying) && isDone(b.flying[n].done) {
		n++
	}
	if n > 0 {
		_ = b.wait(context.Background(), n) // all landed: cannot block
	}
}

// commit sends what ino has buffered and waits for everything sent. It
// returns a failure recorded meanwhile (every handle hears of it too):
// one that all writers were already told of is not this commit's.
func (f *homeFS) commit(ctx context.Context, ino uint64) error {
	b := f.batch(ino)
	if b == nil {
		return nil
	}
	return f.commitBatch(ctx, ino, b)
}

func (f *homeFS) commitBatch(ctx context.Context, ino uint64, b *batch) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	seq := b.seqNow()
	if len(b.extents) > 0 {
		// As a flight, so that readers see the bytes while they travel;
		// it still waits for any earlier flight that it overlaps.
		f.sendLocked(ctx, ino, b)
	}
	if err := b.wait(ctx, len(b.flying)); err != nil {
		return err
	}
	return b.since(seq)
}

func (b *batch) seqNow() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seq
}

// since returns the latest failure if there was one after seq.
func (b *batch) since(seq uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seq == seq {
		return nil
	}
	return b.err
}

// sync is a handle's fsync or close: it commits the inode and returns the
// failure this handle has not yet seen, if any.
func (f *homeFS) sync(ctx context.Context, h *homeHandle) error {
	err := f.commitBatch(ctx, h.ino, h.b)
	if seen := h.b.check(h); seen != nil {
		return seen
	}
	if ctx.Err() != nil {
		return err // cut short (see uninterrupted): what is on its way may still fail
	}
	return nil
}

// flushAll commits every inode's buffered data, the inodes in parallel.
// It returns the first failure, or one a writer open here has not yet
// been told of: nil means every byte written on this node is on a
// quorum or its writer knows it is not.
func (f *homeFS) flushAll(ctx context.Context) error {
	f.mu.Lock()
	inos := make([]uint64, 0, len(f.pending))
	bs := make([]*batch, 0, len(f.pending))
	for ino, b := range f.pending {
		inos, bs = append(inos, ino), append(bs, b)
	}
	f.mu.Unlock()
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.commitBatch(ctx, inos[i], b)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// end is where this node's writers think the file ends: the end of the
// last byte buffered or on its way. Called before the replica is read, a
// flight that lands in between counts in one or the other.
func (b *batch) end() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var end uint64
	b.eachPendingLocked(func(e Extent) { end = max(end, e.Off+uint64(len(e.Data))) })
	return end
}

// eachPendingLocked calls fn on the extents buffered or on their way, in
// the order they were written.
func (b *batch) eachPendingLocked(fn func(Extent)) {
	for _, fl := range b.flying {
		if isDone(fl.done) {
			continue // in the replica, or failed and so not in the file
		}
		for _, e := range fl.ext {
			fn(e)
		}
	}
	for _, e := range b.extents {
		fn(e)
	}
}

// read reads ino from the replica with this node's unlanded writes laid
// over it (read-your-writes across the node's processes).
func (f *homeFS) read(ino, off uint64, dest []byte) (int, error) {
	b := f.batch(ino)
	if b == nil {
		return f.h.Read(ino, off, dest)
	}
	b.mu.Lock()
	if b.quietLocked() {
		b.mu.Unlock()
		return f.h.Read(ino, off, dest)
	}
	// Held across the replica read: no new flight can start meanwhile,
	// and one that lands holds the bytes laid over it anyway. Which
	// flights are pending is decided first, for the same reason as end.
	defer b.mu.Unlock()
	var pend [maxFlight]*flight
	fls := pend[:0]
	for _, fl := range b.flying {
		if !isDone(fl.done) {
			fls = append(fls, fl)
		}
	}
	n, err := f.h.Read(ino, off, dest)
	if err != nil {
		return 0, err
	}
	return overlay(dest, off, n, fls, b.extents), nil
}

// overlay lays ext (the extents of fls, then ext) over dest, which holds
// n bytes of the replica from off, and returns the length of the result:
// up to the file's end as this node's writers see it, a hole reading as
// zeros.
func overlay(dest []byte, off uint64, n int, fls []*flight, ext []Extent) int {
	each := func(fn func(Extent)) {
		for _, fl := range fls {
			for _, e := range fl.ext {
				fn(e)
			}
		}
		for _, e := range ext {
			fn(e)
		}
	}
	end := n
	each(func(e Extent) {
		if hi := e.Off + uint64(len(e.Data)); hi > off {
			end = max(end, int(min(hi-off, uint64(len(dest)))))
		}
	})
	clear(dest[n:end])
	each(func(e Extent) {
		lo, hi := max(off, e.Off), min(off+uint64(end), e.Off+uint64(len(e.Data)))
		if lo < hi {
			copy(dest[lo-off:hi-off], e.Data[lo-e.Off:hi-e.Off])
		}
	})
	return end
}
