package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRenderNodeFiles(t *testing.T) {
	n := NodeView{Name: "node2", Up: true, Load: 1.234, CPUs: 0.5, MemFree: 100, MemSize: 200, Speed: 7}
	want := map[string]string{"load": "1.23\n", "cpus": "0.5\n", "mem": "100 200\n", "speed": "7\n", "status": "up\n"}
	for _, f := range nodeFiles {
		if got := renderNodeFile(n, f); got != want[f] {
			t.Errorf("%s: %q, want %q", f, got, want[f])
		}
	}
	n.Up = false
	if got := renderNodeFile(n, "status"); got != "down\n" {
		t.Errorf("status of a down node: %q", got)
	}
}

func TestRenderProcFiles(t *testing.T) {
	p := ProcView{CPID: 42, Name: "counter", Argv: []string{"sh", "-c", "x y"}, State: "running",
		Node: "node2", Home: "node1", Pid: 777, UID: 1000, NMigs: 3, RSS: 4 << 20, Lock: true,
		CantMove: "an established TCP connection", Started: time.Unix(0, 0)}
	cases := map[string]string{
		"where":    "node2\n",
		"cmdline":  "sh\x00-c\x00x y\x00",
		"cantmove": "an established TCP connection\n",
		"lock":     "1\n",
		"nmigs":    "3\n",
	}
	for f, want := range cases {
		if got := renderProcFile(p, f); got != want {
			t.Errorf("%s: %q, want %q", f, got, want)
		}
	}
	st := renderProcFile(p, "status")
	for _, line := range []string{"Name:\tcounter", "State:\trunning", "Node:\tnode2", "Home:\tnode1",
		"Pid:\t777", "Uid:\t1000", "Migrations:\t3", "VmRSS:\t4096 kB", "Started:\t1970-01-01T00:00:00Z"} {
		if !strings.Contains(st, line+"\n") {
			t.Errorf("status lacks %q:\n%s", line, st)
		}
	}
	p.CantMove = ""
	if got := renderProcFile(p, "cantmove"); got != "" {
		t.Errorf("cantmove of a movable process: %q", got)
	}
}

func TestErrnoMapping(t *testing.T) {
	cases := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", ErrNoProcess), syscall.ENOENT},
		{fmt.Errorf("x: %w", ErrBadValue), syscall.EINVAL},
		{ErrPermission, syscall.EPERM},
		{ErrNodeDown, syscall.EHOSTUNREACH},
		{ErrBusy, syscall.EBUSY},
		{ErrNotImplemented, syscall.ENOSYS},
		{ErrNoQuorum, syscall.EROFS},
		{fmt.Errorf("commit: %w", context.Canceled), syscall.EINTR},
		{errors.New("something else"), syscall.EIO},
	}
	for _, c := range cases {
		if got := errno(c.err); got != c.want {
			t.Errorf("errno(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestParseBool(t *testing.T) {
	for in, want := range map[string]bool{"0": false, "1": true, "1\n": true, "0\n": false} {
		if got, err := parseBool([]byte(in)); err != nil || got != want {
			t.Errorf("parseBool(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "2", "yes", "1\n\n", " 1"} {
		if _, err := parseBool([]byte(in)); !errors.Is(err, ErrBadValue) {
			t.Errorf("parseBool(%q): %v, want ErrBadValue", in, err)
		}
	}
}
