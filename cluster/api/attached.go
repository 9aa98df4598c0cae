package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"

	"ssi/cluster/jobns"
	"ssi/cluster/wire"
)

// StdioUpgrade names the protocol an attached run switches to.
const StdioUpgrade = "ssi-stdio/1"

// stdioChunk is the most stdin bytes one frame carries.
const stdioChunk = 32 << 10

// Attached is the stdio stream of a process started by RunAttached.
type Attached struct {
	CPID int
	conn net.Conn
	fc   *wire.Conn

	mu     sync.Mutex // protects credit and over
	more   *sync.Cond // credit grew, or Relay returned
	credit uint64     // stdin bytes the agent lets us send in all (wire.FrCredit)
	over   bool       // Relay returned
}

// RunAttached starts a cluster process whose stdio comes back on the
// returned stream.
func (c *Client) RunAttached(ctx context.Context, req RunRequest) (*Attached, error) {
	req.Attach = true
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoAgent, err)
	}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequest(http.MethodPost, "http://agent/v1/run", bytes.NewReader(body))
	hreq.Header.Set("Connection", "Upgrade")
	hreq.Header.Set("Upgrade", StdioUpgrade)
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, ReadError(resp)
	}
	return Attach(conn, br)
}

// Attach takes a stream already switched to the stdio protocol: r reads
// it (a bufio.Reader that may hold its first bytes, or conn itself). It
// reads the process's cpid, the stream's first frame; on an error it
// closes conn.
func Attach(conn net.Conn, r io.Reader) (*Attached, error) {
	rw := io.ReadWriter(conn)
	if r != io.Reader(conn) {
		rw = BufConn{Reader: r, Conn: conn}
	}
	fc := wire.NewConn(rw)
	var first struct {
		CPID int `json:"cpid"`
	}
	if err := fc.Expect(wire.FrCPID, &first); err != nil {
		conn.Close()
		return nil, err
	}
	return &Attached{CPID: first.CPID, conn: conn, fc: fc}, nil
}

// Relay copies stdin to the process and its output to stdout and stderr,
// passes on signals, and returns the process's exit code. Stdin goes no
// faster than the agent's credit allows, so that the stream never backs
// up and a signal always reaches the agent at once.
func (at *Attached) Relay(stdin io.Reader, stdout, stderr io.Writer, signals <-chan os.Signal) (int, error) {
	at.more = sync.NewCond(&at.mu)
	defer at.conn.Close()
	defer at.stop()
	go at.pour(stdin)
	go func() {
		for s := range signals {
			if sig, ok := s.(syscall.Signal); ok {
				_ = at.fc.Send(wire.FrSignal, []byte{byte(sig)})
			}
		}
	}()
	for {
		typ, b, err := at.fc.Recv()
		if err != nil {
			return 255, fmt.Errorf("lost the agent before the process ended: %w", err)
		}
		switch typ {
		case wire.FrStdout:
			_, _ = stdout.Write(b)
		case wire.FrStderr:
			_, _ = stderr.Write(b)
		case wire.FrCredit:
			if n, ok := wire.ParseCredit(b); ok {
				at.grant(n)
			}
		case wire.FrError:
			return 255, fmt.Errorf("the agent ended the stream: %s", b)
		case wire.FrExit:
			var e wire.ExitInfo
			if err := json.Unmarshal(b, &e); err != nil {
				return 255, err
			}
			return e.Code, nil
		}
	}
}

// pour sends stdin, reading no more than the credit lets it send, then
// the EOF.
func (at *Attached) pour(stdin io.Reader) {
	buf := make([]byte, stdioChunk)
	var sent uint64
	for {
		may, ok := at.mayPour(sent)
		if !ok {
			return
		}
		n, err := stdin.Read(buf[:min(may, uint64(len(buf)))])
		if n > 0 {
			if at.fc.Send(wire.FrStdin, buf[:n]) != nil {
				return
			}
			sent += uint64(n)
		}
		if err != nil {
			_ = at.fc.Send(wire.FrEOF, nil)
			return
		}
	}
}

// mayPour waits until the credit goes past sent and says by how much;
// false once Relay has returned.
func (at *Attached) mayPour(sent uint64) (uint64, bool) {
	at.mu.Lock()
	defer at.mu.Unlock()
	for at.credit <= sent && !at.over {
		at.more.Wait()
	}
	if at.over {
		return 0, false
	}
	return at.credit - sent, true
}

// grant takes the agent's credit: a total, so the largest counts.
func (at *Attached) grant(n uint64) {
	at.mu.Lock()
	defer at.mu.Unlock()
	if n > at.credit {
		at.credit = n
		at.more.Broadcast()
	}
}

// stop ends pour's wait for credit.
func (at *Attached) stop() {
	at.mu.Lock()
	defer at.mu.Unlock()
	at.over = true
	at.more.Broadcast()
}

// BufConn is a connection read through the reader it came with after an
// HTTP upgrade (a bufio.Reader that may hold the first bytes the other
// side sent), on either side of the upgrade.
type BufConn struct {
	io.Reader
	net.Conn
}

func (c BufConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }

// Resize tells the process with a terminal of its own (RunRequest.TTY)
// its caller's terminal size; ssi run sends it on SIGWINCH.
func (at *Attached) Resize(ws jobns.Winsize) error {
	return at.fc.Send(wire.FrWinsize, ws.Bytes())
}
