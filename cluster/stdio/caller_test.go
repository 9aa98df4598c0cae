package stdio

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/wire"
)

// relay is a caller that keeps to its credit, as `ssi run` does
// (Attached.Relay in package cluster): stdin from in, no faster than
// the session grants, then the EOF; signals from sigs (nil: none);
// output goes to x.stdout and x.stderr, the exit to x.exits.
func (x *stdioTest) relay(in io.Reader, sigs <-chan os.Signal) {
	go x.readCaller()
	go x.pour(in)
	if sigs == nil {
		return
	}
	go func() {
		for {
			select {
			case s := <-sigs:
				if sig, ok := s.(syscall.Signal); ok {
					_ = x.caller.Send(wire.FrSignal, []byte{byte(sig)})
				}
			case <-x.hungUp:
				return
			}
		}
	}()
}

// pour sends in within the credit readCaller has seen, waiting for more
// when it is used up; the EOF once in ends.
func (x *stdioTest) pour(in io.Reader) {
	buf := make([]byte, maxChunk)
	var sent uint64
	for {
		x.mu.Lock()
		room := x.credit - min(x.credit, sent)
		x.mu.Unlock()
		if room == 0 {
			select {
			case <-x.granted:
				continue
			case <-x.hungUp:
				return
			}
		}
		n, rerr := in.Read(buf[:min(room, uint64(len(buf)))])
		if n > 0 && x.caller.Send(wire.FrStdin, buf[:n]) != nil {
			return
		}
		sent += uint64(n)
		if rerr != nil {
			_ = x.caller.Send(wire.FrEOF, nil)
			return
		}
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
