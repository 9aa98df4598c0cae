package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// uninterrupted is the context a home request works under: the request's
// own, except that the kernel's interrupt does not end it unless its
// caller is being killed. done must be called once the work is over.
//
// The kernel interrupts a request (FUSE_INTERRUPT; go-fuse then ends the
// request's context) as soon as its caller has any signal pending, even
// one the program ignores, handles with SA_RESTART or never sees: the
// ptrace stop with which CRIU freezes a process for a move (a failed move
// resumes it, a move that works restores it), the Go runtime's preemption
// signal, SIGCHLD, SIGWINCH. Whatever the server answers then reaches the
// program as it is: the kernel does not let a server ask for the call to
// be restarted. So an EINTR would be the program's, and few programs take
// EINTR from fsync, close, unlink or rename for anything but a failure
// (sqlite gives up: SQLITE_IOERR_FSYNC). Nor would it be true: an entry
// proposed to Raft is committed all the same, and a flight lands. The
// home finishes what a request started instead; the backend bounds how
// long each call waits (homeWait, the read barrier's wait), so a request
// still ends. (Write waits on no context: a full batch flies on its own,
// see sendLocked; and nobody waits for a release, so nothing interrupts
// it.)
//
// A caller that is being killed is another matter: once its request is
// with the server, the kernel keeps it in uninterruptible sleep, SIGKILL
// or not, until the answer comes (seen: a killed process in D state for
// as long as its truncate was held). Its answer goes nowhere, so the
// context ends for it: at the interrupt if the fatal signal came first,
// else when a poll sees one arrive afterwards (the kernel interrupts a
// request once only).
func uninterrupted(ctx context.Context) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 { // 0: a caller outside the mount's PID namespace
		return work, cancel
	}
	tid := c.Pid
	stop := context.AfterFunc(ctx, func() {
		for !dying(tid) {
			select {
			case <-work.Done():
				return
			case <-time.After(dyingPoll):
			}
		}
		cancel()
	})
	return work, func() { stop(); cancel() }
}

// dyingPoll is how often an interrupted request looks whether its caller
// is being killed meanwhile: how much longer a killed program may wait
// for its exit.
const dyingPoll = 50 * time.Millisecond

// dying reports that thread tid has a fatal signal pending, as the
// kernel's fatal_signal_pending does: SIGKILL in the thread's own pending
// set, where the kernel puts it for every thread of a process that a
// signal kills (kill -9, or a signal it neither handles nor ignores). A
// thread that cannot be read is not known to be dying.
func dying(tid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return false
	}
	const key = "\nSigPnd:\t"
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return false
	}
	line := b[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	pending, err := strconv.ParseUint(string(line), 16, 64)
	return err == nil && pending&(1<<(unix.SIGKILL-1)) != 0
}
