package migrate

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
)

// A failed dump reads as one line, CRIU's message first, each error once.
func TestFailureIsOneLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "dump.log")
	log := "(00.040) Warn  (criu/x.c:1): something harmless\n" +
		"(00.066868) Error (criu/filesystems.c:663): failed to dump fs ./cluster (fuse): always fail\n" +
		"(00.067367)      1: Error (criu/cr-dump.c:2111): Dumping   FAILED.\n"
	if err := os.WriteFile(p, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	resp := &rpc.CriuResp{CrErrmsg: ptr("Error (criu/filesystems.c:663): failed to dump fs ./cluster (fuse): always fail\n")}
	err := failure(ErrDump, resp, nil, p)
	want := "checkpoint failed: failed to dump fs ./cluster (fuse): always fail; Dumping FAILED."
	if !errors.Is(err, ErrDump) || err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	err = failure(ErrRestore, nil, errors.New("criu rpc read: EOF"), filepath.Join(t.TempDir(), "none"))
	if got := err.Error(); !strings.HasPrefix(got, "restore failed: criu rpc read: EOF; (no criu log: ") || strings.Contains(got, "\n") {
		t.Fatalf("got %q", got)
	}
}

// A call whose context ends returns even when something criu started
// still holds its end of the socket (a restored task stuck in the kernel).
func TestCallEndsWithItsContext(t *testing.T) {
	script := filepath.Join(t.TempDir(), "criu")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nsleep 5 >/dev/null 2>&1 &\nwait\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := New(Config{Path: script}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Version(ctx); err == nil {
		t.Fatal("a criu that never answers gave a version")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the call returned %v after its context ended", d)
	}
}
