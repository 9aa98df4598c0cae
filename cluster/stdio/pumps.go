package stdio

import (
	"os"
	"sync"
	"time"
)

// pumps read the process's output pipes into its holder.
type pumps struct {
	stdout, stderr *os.File
	keep           func(stderr bool, b []byte) // the holder's addOut
	wg             sync.WaitGroup
}

func (p *pumps) start() {
	_ = p.stdout.SetReadDeadline(time.Time{})
	_ = p.stderr.SetReadDeadline(time.Time{})
	p.wg.Add(2)
	go p.pump(p.stdout, false)
	go p.pump(p.stderr, true)
}

// pump keeps one output pipe's bytes until EOF or a deadline (a detach).
func (p *pumps) pump(f *os.File, stderr bool) {
	defer p.wg.Done()
	buf := make([]byte, maxChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			p.keep(stderr, buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// stop ends the pumps within d: their reads end at once, and one
// waiting for room sees the pause; false if they did not end.
func (p *pumps) stop(d time.Duration) bool {
	_ = p.stdout.SetReadDeadline(time.Now())
	_ = p.stderr.SetReadDeadline(time.Now())
	return p.wait(d)
}

// wait waits at most d for the pumps to end; false if they did not.
func (p *pumps) wait(d time.Duration) bool {
	ended := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(ended)
	}()
	select {
	case <-ended:
		return true
	case <-time.After(d):
		return false
	}
}
