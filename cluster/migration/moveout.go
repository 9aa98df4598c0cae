package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"time"

	"ssi/cluster/stdio"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/migrate"
	"ssi/raftstore"
)

// dump checkpoints the tree, leaving it stopped here, with its pages
// streamed to the destination's page server while CRIU writes them.
func (o *moveOut) dump(ctx context.Context, pageServer bool) error {
	dopts := migrate.DumpOptions{Pid: o.j.Pid(), Dir: o.dir, LeaveStopped: true, FileLocks: true,
		UID: o.tree.UID, GID: o.tree.GID, NodeMounts: o.tree.Mounts}
	if o.m.hooks.FailDump == FailInCRIU {
		// CRIU fails inside the dump, the tree frozen: /cluster is not
		// named a node mount, and CRIU cannot dump a FUSE mount.
		dopts.NodeMounts = slices.DeleteFunc(slices.Clone(o.tree.Mounts), func(mp string) bool { return mp == o.m.cfg.Mountpoint })
	}
	var pages *pageRelay
	if pageServer {
		var err error
		if pages, err = newPageRelay(o.c); err != nil {
			return err
		}
		defer pages.close()
		dopts.PageServer = pages.criu
		pages.start()
	}
	received := make(chan error, 1)
	if pages != nil {
		go func() { received <- pages.receive() }()
	}
	o.stopped = time.Now()
	_, err := o.m.cp.Dump(ctx, dopts)
	if pages != nil {
		// CRIU is done with its end: ours reads EOF and the relay ends.
		pages.criu.Close()
		perr := pages.finish()
		if rerr := <-received; perr == nil {
			perr = rerr
		}
		o.bytes = pages.sentBytes()
		if err == nil && perr != nil {
			// The dump itself worked: the tree is stopped here.
			return fmt.Errorf("%w: pages to %s: %v", fs.ErrNodeDown, o.to, perr)
		}
	}
	if err != nil {
		// CRIU resumes the tree when a dump fails, unless it was killed
		// itself: resuming again is harmless.
		o.m.host.Signal(o.j.Pid(), syscall.SIGCONT)
		o.stopped = time.Time{}
		return fmt.Errorf("%w: %v", fs.ErrCannotMove, err)
	}
	if o.m.hooks.FailDump == FailAfterDump {
		return fmt.Errorf("%w: the dump is made to fail (SSI_FAIL_DUMP=after)", fs.ErrCannotMove)
	}
	o.phases = append(o.phases, "dump", time.Since(o.stopped).Round(time.Millisecond))
	return nil
}

// handOver passes the stopped tree's state on: its home writes agreed,
// its stdio detached, its images sent.
func (o *moveOut) handOver(ctx context.Context) error {
	// The frozen tree's writes to /cluster/home that this node still
	// buffers must be agreed before the destination catches up and
	// reopens the files: else its next append lands on a stale end.
	if err := o.m.host.FlushHome(ctx); err != nil {
		return fmt.Errorf("%w: committing its writes to /cluster/home: %v", fs.ErrNoQuorum, err)
	}
	o.phases = append(o.phases, "flush", time.Since(o.stopped).Round(time.Millisecond))
	if h := o.j.Holder(); h != nil {
		st, err := h.Detach(ctx)
		if err != nil {
			return err
		}
		o.st = st
	}
	st := o.st
	if st == nil {
		st = &stdio.State{}
	}
	sent, err := wire.SendImages(o.c, o.dir)
	o.bytes += sent
	if err == nil {
		err = o.c.SendJSON(wire.FrPending, st)
	}
	if err != nil {
		return fmt.Errorf("%w: sending to %s: %v", fs.ErrNodeDown, o.to, err)
	}
	o.phases = append(o.phases, "send", time.Since(o.stopped).Round(time.Millisecond))
	return nil
}

// commit records the verdict the destination's restore earned and tells
// the destination: the copy there runs, the one here is killed.
func (o *moveOut) commit() (bool, error) {
	cpid := o.j.CPID()
	stats := &raftstore.MoveStats{Frozen: o.frozen, Total: time.Since(o.start), Bytes: o.bytes, EndedAt: time.Now()}
	oc, err := o.m.settle(cpid, o.id, true, stats)
	if err != nil {
		// Unknown outcome: the copy here stays stopped (and the one there,
		// which waits for our verdict or the agreed state) until it is known.
		o.m.settleLater(cpid, o.id, true, stats, func(oc outcome) {
			if oc != aborted {
				o.j.Finish()
			} else {
				o.resume()
			}
		})
		return false, fmt.Errorf("%w: the outcome could not be recorded yet: %v", fs.ErrNoQuorum, err)
	}
	_ = o.c.SendJSON(wire.FrDecision, wire.Decision{Commit: oc == committed})
	switch oc {
	case aborted:
		return o.fail(errors.New("aborted by the destination"))
	case gone:
		o.j.Finish()
		return false, fmt.Errorf("%w: process %d was removed during its move", fs.ErrNoProcess, cpid)
	}
	o.j.Finish()
	_ = o.c.Expect(wire.FrDone, nil)
	return true, nil
}

// fail aborts the migration in the agreed state and resumes the process
// here, unless the destination's commit won the race.
func (o *moveOut) fail(cause error) (bool, error) {
	if !o.stopped.IsZero() {
		o.frozen = time.Since(o.stopped)
	}
	cpid := o.j.CPID()
	stats := &raftstore.MoveStats{Reason: cause.Error(), Frozen: o.frozen, Total: time.Since(o.start),
		Bytes: o.bytes, EndedAt: time.Now()}
	oc, err := o.m.settle(cpid, o.id, false, stats)
	if err != nil {
		// Nobody knows yet who won: the copy here stays stopped until
		// the agreed state says.
		o.m.settleLater(cpid, o.id, false, stats, func(oc outcome) {
			if oc == aborted {
				o.resume()
			} else {
				o.j.Finish()
			}
		})
		return false, fmt.Errorf("%w: %v; the outcome is not known yet (%v)", fs.ErrNoQuorum, cause, err)
	}
	switch oc {
	case committed:
		// The destination committed: it runs there.
		o.j.Finish()
		return true, nil
	case gone:
		o.j.Finish()
		return false, fmt.Errorf("%w: process %d was removed during its move", fs.ErrNoProcess, cpid)
	}
	o.resume()
	return false, cause
}

// resume lets the stopped tree run here again, with its stdio.
func (o *moveOut) resume() {
	if o.stopped.IsZero() {
		return
	}
	o.m.host.Signal(o.j.Pid(), syscall.SIGCONT)
	if h := o.j.Holder(); h != nil && o.st != nil {
		h.Resume(o.st)
	}
}
