package lab

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ssi/cluster/transport"
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

// The lab's token lives in a file of its own and neither it nor the
// record is readable by others; a lab of an older version, whose
// world-readable lab.json held the token, is rewritten that way.
func TestLabSecretsArePrivate(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "priv")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	tok, _ := transport.NewToken()
	old := `{"nodes": 2, "subnet": "10.213.5.0/24", "token": "` + tok + `"}`
	if err := os.WriteFile(filepath.Join(root, "lab.json"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Open(Options{Name: "priv", Dir: dir})
	if err != nil || l.Token() != tok {
		t.Fatalf("open an old lab: token %q, %v", l.Token(), err)
	}
	if err := l.writeRecord(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"lab.json", "join-token"} {
		st, err := os.Stat(filepath.Join(root, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v: want mode 0600", f, st.Mode(), err)
		}
	}
	rec, _ := os.ReadFile(filepath.Join(root, "lab.json"))
	if strings.Contains(string(rec), tok) {
		t.Fatalf("lab.json still holds the token: %s", rec)
	}
	if got, err := transport.ReadTokenFile(filepath.Join(root, "join-token")); err != nil || got != tok {
		t.Fatalf("the agents' token file: %q, %v", got, err)
	}
	again, err := Open(Options{Name: "priv", Dir: dir})
	if err != nil || again.Token() != tok || again.opts.Nodes != 2 {
		t.Fatalf("reopened: token %q, nodes %d, %v", again.Token(), again.opts.Nodes, err)
	}
}
