package stdio

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"ssi/cluster/api"
)

// relayResult is what Relay returned.
type relayResult struct {
	code int
	err  error
}

// relay runs `ssi run`'s side, api.Attached, on the caller's end, with
// stdin from in and signals from sigs (nil: none); output goes to
// x.stdout and x.stderr.
func (x *stdioTest) relay(in io.Reader, sigs chan os.Signal) <-chan relayResult {
	x.t.Helper()
	if sigs == nil {
		sigs = make(chan os.Signal)
		x.t.Cleanup(func() { close(sigs) })
	}
	at, err := api.Attach(x.callerConn, x.callerConn)
	if err != nil {
		x.t.Fatalf("attaching: %v", err)
	}
	if at.CPID != testCPID {
		x.t.Fatalf("attached to cpid %d, want %d", at.CPID, testCPID)
	}
	res := make(chan relayResult, 1)
	go func() {
		code, err := at.Relay(in, lockedWriter{x, &x.stdout}, lockedWriter{x, &x.stderr}, sigs)
		res <- relayResult{code, err}
	}()
	return res
}

// lockedWriter writes into one of x's buffers.
type lockedWriter struct {
	x *stdioTest
	b *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.x.mu.Lock()
	defer w.x.mu.Unlock()
	return w.b.Write(p)
}

// waitRelay waits for Relay to return the exit code want.
func waitRelay(t *testing.T, res <-chan relayResult, want int) {
	t.Helper()
	select {
	case r := <-res:
		if r.err != nil || r.code != want {
			t.Fatalf("Relay returned %d, %v; want %d", r.code, r.err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Relay has not returned")
	}
}

// pourer is stdin like `yes`'s: lines of 64 bytes, for ever or up to
// limit bytes. It counts what it gave.
type pourer struct {
	n     atomic.Int64
	limit int64 // 0: none
}

func (p *pourer) Read(b []byte) (int, error) {
	at := p.n.Load()
	if p.limit > 0 {
		if at >= p.limit {
			return 0, io.EOF
		}
		b = b[:min(int64(len(b)), p.limit-at)]
	}
	for i := range b {
		b[i] = 'y'
		if (at+int64(i))%64 == 63 {
			b[i] = '\n'
		}
	}
	p.n.Add(int64(len(b)))
	return len(b), nil
}

// waitPoured waits until the caller has read at least least bytes of
// its stdin and then no more for a while: it has sent all it may. It
// returns how much that is.
func waitPoured(t *testing.T, p *pourer, least int64) int64 {
	t.Helper()
	last, since := int64(-1), time.Now()
	eventually(t, 5*time.Second, func() (bool, string) {
		n := p.n.Load()
		if n != last {
			last, since = n, time.Now()
		}
		return n >= least && time.Since(since) >= 200*time.Millisecond,
			fmt.Sprintf("the caller has read %d bytes of stdin, and goes on", n)
	})
	return last
}
