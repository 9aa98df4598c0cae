package lab

import (
	"errors"
	"strings"
	"testing"
)

func TestAddrAndNames(t *testing.T) {
	l, err := Open(Options{Name: "abcdefgh", Dir: t.TempDir(), Subnet: "10.213.5.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		node, want string
	}{
		{"node1", "10.213.5.11"},
		{"node2", "10.213.5.12"},
		{"node200", "10.213.5.210"},
	}
	for _, c := range cases {
		a, err := l.Addr(c.node)
		if err != nil || a.String() != c.want {
			t.Errorf("Addr(%s) = %v, %v; want %s", c.node, a, err, c.want)
		}
	}
	for _, bad := range []string{"node0", "node201", "nodeX", "n1", ""} {
		if _, err := l.Addr(bad); !errors.Is(err, ErrNoNode) {
			t.Errorf("Addr(%q): %v, want ErrNoNode", bad, err)
		}
	}
	// Linux limits interface names to 15 bytes; the longest lab name and
	// node number must fit.
	for _, name := range []string{l.bridge(), l.hostVeth(MaxNodes), l.peerVeth(MaxNodes)} {
		if len(name) > 15 {
			t.Errorf("interface name %q is %d bytes", name, len(name))
		}
	}
}

func TestOpenRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "toolongname", "a-b", "a/b", "a.b"} {
		if _, err := Open(Options{Name: name, Dir: t.TempDir()}); err == nil {
			t.Errorf("Open(%q) accepted", name)
		}
	}
}

func TestCommandsOnAMissingLab(t *testing.T) {
	l, err := Open(Options{Name: "none", Dir: t.TempDir(), Subnet: "10.213.5.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Command("node1", "true"); !errors.Is(err, ErrNoLab) {
		t.Errorf("Command: %v, want ErrNoLab", err)
	}
	if err := l.Kill("node1"); !errors.Is(err, ErrNoLab) {
		t.Errorf("Kill: %v, want ErrNoLab", err)
	}
	if _, err := l.Nodes(); !errors.Is(err, ErrNoLab) {
		t.Errorf("Nodes: %v, want ErrNoLab", err)
	}
}

func TestUpRefusesBadNodeCounts(t *testing.T) {
	for _, n := range []int{0, -1, MaxNodes + 1} {
		l, _ := Open(Options{Name: "bad", Dir: t.TempDir(), Subnet: "10.213.5.0/24", Nodes: n})
		if err := l.Up(t.Context()); err == nil || !strings.Contains(err.Error(), "--nodes") {
			t.Errorf("Up with %d nodes: %v", n, err)
		}
	}
}

func TestProcessAlive(t *testing.T) {
	if !processAlive(1) {
		t.Error("pid 1 reported dead")
	}
	if processAlive(1 << 30) {
		t.Error("impossible pid reported alive")
	}
}
