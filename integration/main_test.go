// Package integration runs the real ssi binary on real labs: network
// namespaces on a bridge, agents talking TCP. It needs root; as a normal
// user every test skips with the reason.
package integration

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ssiBin is the binary under test, built once from this checkout.
var ssiBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 || testing.Short() {
		// Tests skip one by one with the reason (needRoot).
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ssi-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ssiBin = filepath.Join(dir, "ssi")
	build := exec.Command("go", "build", "-o", ssiBin, "../cmd/ssi")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ssi:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, cgroups, mounts): run `sudo make test`")
	}
	if testing.Short() {
		t.Skip("-short: skipping lab test")
	}
}

// result is what a run of ssi printed and how it exited.
type result struct {
	out, err string
	code     int
}

// ssi runs the binary with env added to ours.
func ssi(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(ssiBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{out: out.String(), err: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ssi %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustSSI runs ssi and fails the test unless it exits 0.
func mustSSI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	r := ssi(t, env, args...)
	if r.code != 0 {
		t.Fatalf("ssi %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

// syncBuffer is a buffer a command writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
