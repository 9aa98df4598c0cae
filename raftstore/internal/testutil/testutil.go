package testutil

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// Timeout bounds every wait and context made here: long enough for a slow
// CI machine, short enough that a hung test fails rather than stalls.
const Timeout = 10 * time.Second

// TCPLayer is a plain-TCP raftstore.Layer, as the agent's would be minus
// TLS.
type TCPLayer struct{ net.Listener }

// Dial connects to the raft layer listening at address.
func (l TCPLayer) Dial(address string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", address, timeout)
}

// Logger sends logs to t.Logf until the test's cleanups are done: raft
// goroutines may still log while other stores shut down, and t.Logf after
// the test has ended panics. Register it before the cleanups that stop
// what logs to it, so that they run first.
func Logger(t testing.TB) *slog.Logger {
	w := &writer{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type writer struct {
	mu   sync.Mutex // serializes writes with the end of the test
	t    testing.TB
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// WaitFor polls cond until it holds, failing the test if Timeout passes
// first.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// Context returns a context that ends after Timeout or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}
