package stdio

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Pipes are our ends of an attached job's pipes.
type Pipes struct {
	StdinW, StdinR, StdoutR, StderrR *os.File
	// WinW is the write end of the window size pipe of a process with a
	// terminal (nil otherwise): each size the session sends is written
	// to it.
	WinW *os.File
}

// NewPipes makes a job's three stdio pipes, and with tty its window size
// pipe: our ends, and theirs (stdin read, stdout write, stderr write,
// window sizes read). Both stdin ends are the same pipe: ours stays open.
func NewPipes(tty bool) (ours *Pipes, theirs []*os.File, err error) {
	n := 3
	if tty {
		n = 4
	}
	var r, w [4]*os.File
	for i := range n {
		if r[i], w[i], err = os.Pipe(); err != nil {
			for k := range i {
				r[k].Close()
				w[k].Close()
			}
			return nil, nil, err
		}
	}
	ours = &Pipes{StdinW: w[0], StdinR: r[0], StdoutR: r[1], StderrR: r[2], WinW: w[3]}
	theirs = []*os.File{r[0], w[1], w[2]}
	if tty {
		theirs = append(theirs, r[3])
	}
	return ours, theirs, nil
}

// Close closes every non-nil end; a nil p has none.
func (p *Pipes) Close() {
	if p == nil {
		return
	}
	for _, f := range []*os.File{p.StdinW, p.StdinR, p.StdoutR, p.StderrR, p.WinW} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// drain reads what a pipe holds now, without waiting for more. It asks
// the kernel how much is there (FIONREAD) instead of relying on
// non-blocking reads: a stdin pipe shares its blocking mode with the
// process reading it.
func drain(f *os.File) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var out []byte
	for {
		var rerr error
		var got int
		if err := rc.Control(func(fd uintptr) {
			n, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
			if err != nil || n == 0 {
				rerr = err
				return
			}
			buf := make([]byte, n)
			got, rerr = unix.Read(int(fd), buf)
			if got > 0 {
				out = append(out, buf[:got]...)
			}
		}); err != nil {
			return out, err
		}
		if rerr != nil {
			return out, rerr
		}
		if got <= 0 {
			return out, nil
		}
	}
}

// peek copies what a pipe holds now and leaves it there (tee(2) into a
// pipe of ours), so that a move that fails leaves the process's stdin as
// it was, even once its EOF was given.
func peek(f *os.File) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var out []byte
	var perr error
	if err := rc.Control(func(fd uintptr) { out, perr = peekFD(int(fd)) }); err != nil {
		return nil, err
	}
	return out, perr
}

func peekFD(fd int) ([]byte, error) {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	if err != nil || n == 0 {
		return nil, err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	// tee copies the pipe's buffers as they are: ours needs as many.
	size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, max(size, n)); err != nil {
		return nil, err
	}
	got, err := unix.Tee(fd, p[1], n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if int(got) != n {
		return nil, fmt.Errorf("copied %d of the %d bytes in the pipe", got, n)
	}
	out := make([]byte, n)
	for read := 0; read < n; {
		k, err := unix.Read(p[0], out[read:])
		if err != nil {
			return nil, err
		}
		read += k
	}
	return out, nil
}
