package stdio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"ssi/cluster/wire"
)

// These tests drive a session and its holders as the agents do, over
// socketpairs (buffered like TCP), with a fake process that echoes its
// stdin lines and can be frozen and "restored" onto new pipes, as CRIU
// does (fake_test.go). Every wait has a deadline.

// fastStdio is Timing for tests: dead peers show within a second, while
// a live stream, even on a starved machine, is never taken for a quiet
// one (TestStdioQuietStreamsEnd shortens idle for itself: quietStdio).
var fastStdio = Timing{
	keepalive: 50 * time.Millisecond, idle: 10 * time.Second, dial: time.Second,
	backoff: 100 * time.Millisecond, orphan: time.Second, exitWait: 2 * time.Second,
	stop: time.Second, watch: 50 * time.Millisecond, lostGrace: 300 * time.Millisecond,
}

// quietStdio is fastStdio with streams that go quiet given up on soon.
var quietStdio = func() Timing { tm := fastStdio; tm.idle = 500 * time.Millisecond; return tm }()

const testCPID = 42

// stdioTest is one attached process: the session, the caller's end, and
// how holders reach the session.
type stdioTest struct {
	t     *testing.T
	log   *slog.Logger
	table *Sessions
	s     *Session

	caller     *wire.Conn    // what `ssi run` holds
	callerConn net.Conn      // caller's
	hungUp     chan struct{} // readCaller: closed once the caller's stream ended

	mu     sync.Mutex
	stdout bytes.Buffer
	stderr bytes.Buffer
	exits  []int
	atExit int        // stdout bytes when the exit came
	links  []net.Conn // the session's ends of holder streams
	credit uint64     // readCaller: the largest credit granted
	errs   []string   // readCaller: wire.FrError texts
}

// newStdioTest is openStdioTest with a caller that ignores its credit:
// readCaller reads the stream, the test sends on x.caller itself.
func newStdioTest(t *testing.T, check func() (bool, *int)) *stdioTest {
	x := openStdioTest(t, check)
	go x.readCaller()
	return x
}

// openStdioTest is a session and the caller's end of its stream, which
// nobody reads yet (readCaller, or relay: api.Attached).
func openStdioTest(t *testing.T, check func() (bool, *int)) *stdioTest {
	return openStdioTestTiming(t, check, fastStdio)
}

// openStdioTestTiming is openStdioTest with the session's timing tm.
func openStdioTestTiming(t *testing.T, check func() (bool, *int), tm Timing) *stdioTest {
	x := &stdioTest{t: t, log: testLogger(t), hungUp: make(chan struct{})}
	if check == nil {
		check = func() (bool, *int) { return true, nil }
	}
	x.table = NewSessions(func(int) (bool, *int) { return check() }, x.log)
	x.table.tm = tm
	mine, theirs := socketPair(t)
	agentEnd := wire.NewConn(theirs)
	x.s = x.table.Open(testCPID, agentEnd)
	// The process's cpid comes first, as the agent sends it (jobs).
	if err := agentEnd.SendJSON(wire.FrCPID, map[string]int{"cpid": testCPID}); err != nil {
		t.Fatal(err)
	}
	go x.s.FromClient(agentEnd)
	x.caller, x.callerConn = wire.NewConn(mine), mine
	t.Cleanup(func() { x.s.end([]byte(`{"code":-1}`)) })
	return x
}

// readCaller is a raw caller's loop: output, credit, errors and the
// exit, as they come.
func (x *stdioTest) readCaller() {
	defer close(x.hungUp)
	for {
		typ, b, err := x.caller.Recv()
		if err != nil {
			return
		}
		x.mu.Lock()
		switch typ {
		case wire.FrStdout:
			x.stdout.Write(b)
		case wire.FrStderr:
			x.stderr.Write(b)
		case wire.FrCredit:
			if n, ok := wire.ParseCredit(b); ok {
				x.credit = max(x.credit, n)
			}
		case wire.FrError:
			x.errs = append(x.errs, string(b))
		case wire.FrExit:
			var e wire.ExitInfo
			_ = json.Unmarshal(b, &e)
			x.exits = append(x.exits, e.Code)
			x.atExit = x.stdout.Len()
		}
		x.mu.Unlock()
	}
}

func (x *stdioTest) send(typ wire.Frame, b string) {
	x.t.Helper()
	if err := x.caller.Send(typ, []byte(b)); err != nil {
		x.t.Fatalf("the caller's send: %v", err)
	}
}

// waitOut waits until the caller's stdout is exactly want.
func (x *stdioTest) waitOut(want string, d time.Duration) {
	x.t.Helper()
	eventually(x.t, d, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		got := x.stdout.String()
		if len(got) > len(want) || !strings.HasPrefix(want, got) {
			x.t.Fatalf("caller's stdout %q, want %q", got, want)
		}
		return got == want, fmt.Sprintf("caller's stdout %q, want %q", got, want)
	})
}

// waitExit waits for the one exit the caller must get.
func (x *stdioTest) waitExit(want int, d time.Duration) {
	x.t.Helper()
	eventually(x.t, d, func() (bool, string) {
		x.mu.Lock()
		defer x.mu.Unlock()
		return len(x.exits) > 0, fmt.Sprintf("no exit; stdout %q stderr %q", x.stdout.String(), x.stderr.String())
	})
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.exits) != 1 || x.exits[0] != want {
		x.t.Fatalf("exits %v, want [%d]", x.exits, want)
	}
}
