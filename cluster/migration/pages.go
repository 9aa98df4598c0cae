package migration

import (
	"fmt"
	"os"
	"sync"
	"syscall"

	"ssi/cluster/wire"
)

// Memory pages travel while CRIU dumps, as wire.FrPages frames between the
// two agents (see wire.FrPagesEnd).

// pageRelay is one side's relay between its CRIU's socket and the stream.
type pageRelay struct {
	c     *wire.Conn
	ours  *os.File // our end of the socket pair
	criu  *os.File // CRIU's end: handed to CRIU, then closed here
	sent  chan error
	mu    sync.Mutex
	bytes int64
}

func newPageRelay(c *wire.Conn) (*pageRelay, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("page relay: %w", err)
	}
	// Big socket buffers: CRIU and the relay move megabytes per call
	// instead of the default couple of hundred kilobytes. Best effort
	// (the FORCE variants need CAP_NET_ADMIN).
	for _, fd := range fds {
		for _, opt := range []int{syscall.SO_SNDBUFFORCE, syscall.SO_RCVBUFFORCE} {
			_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, opt, 8<<20)
		}
	}
	// Ours polled: a blocking read of it would keep Close from closing it.
	_ = syscall.SetNonblock(fds[0], true)
	return &pageRelay{c: c, ours: os.NewFile(uintptr(fds[0]), "pages"),
		criu: os.NewFile(uintptr(fds[1]), "pages-criu"), sent: make(chan error, 1)}, nil
}

// start copies what CRIU writes into frames, then wire.FrPagesEnd. A failed
// send closes our end, so that CRIU fails instead of blocking.
func (p *pageRelay) start() {
	go func() {
		buf := make([]byte, 1<<20)
		for {
			n, err := p.ours.Read(buf)
			if n > 0 {
				if serr := p.c.SendRaw(wire.FrPages, buf[:n]); serr != nil {
					p.ours.Close()
					p.sent <- serr
					return
				}
				p.mu.Lock()
				p.bytes += int64(n)
				p.mu.Unlock()
			}
			if err != nil {
				p.sent <- p.c.Send(wire.FrPagesEnd, nil)
				return
			}
		}
	}()
}

// receive writes the peer's wire.FrPages to CRIU until the peer's wire.FrPagesEnd;
// it must be the only reader of the stream meanwhile. Any failure closes
// our end, so that CRIU fails instead of waiting.
func (p *pageRelay) receive() error {
	for {
		typ, b, err := p.c.RecvShared()
		if err == nil {
			switch typ {
			case wire.FrPages:
				_, err = p.ours.Write(b)
			case wire.FrPagesEnd:
				// Nothing more comes for CRIU: let it see the end.
				_ = syscall.Shutdown(int(p.ours.Fd()), syscall.SHUT_WR)
				return nil
			case wire.FrError:
				err = fmt.Errorf("peer: %s", b)
			default:
				err = fmt.Errorf("peer sent frame %q among the pages", typ)
			}
		}
		if err != nil {
			p.ours.Close()
			return err
		}
	}
}

// finish waits for our side's wire.FrPagesEnd to be sent.
func (p *pageRelay) finish() error { return <-p.sent }

func (p *pageRelay) sentBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}

func (p *pageRelay) close() {
	p.ours.Close()
	p.criu.Close()
}
