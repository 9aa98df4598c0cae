package integration

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSecurityMove: a restore never opens what the process's owner could
// not. CRIU restores as root and would reopen each file by the path it
// had at dump time, following symbolic links: uid 1000, holding
// ~/d/passwd open for append, who makes d a link to a root-only
// directory between dump and restore (or on the destination
// beforehand), would get a process holding a root file open. Each
// attack first shows the same user's same process moving normally.
func TestSecurityMove(t *testing.T) {
	dir := t.TempDir()
	// The test's user runs the script there.
	openToAll(t, dir)
	// The destination pauses every arrival between its check of the
	// files and CRIU's restore until this file exists (SSI_PAUSE_RESTORE).
	release := filepath.Join(dir, "release")
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	needRoot(t)
	c := newClusterLabEnv(t, "itsecmv", []string{"SSI_LAB_SUBNET=10.213.80.0/24", "SSI_PAUSE_RESTORE=" + release}, "--nodes", "2")
	two := []string{"node1", "node2"}
	c.agree("node1", two, 30*time.Second)
	s := &secLab{migLab: &migLab{clusterLab: c, dir: dir}, u: asUser{1000, "-uid1000"}, release: release}
	s.canary = newCanary(t)
	s.holder = s.script(t, "holder.sh", "exec 3>>\"$1\"\ni=0\nwhile :; do i=$((i+1)); echo $i >&3; sleep 0.1; done\n")
	s.lurker = s.script(t, "lurker.sh", "exec 3>>\"$1\"\nwhile [ ! -e \"$2\" ]; do sleep 0.1; done\n"+
		"while :; do echo lurker >&3; sleep 0.1; done\n")

	t.Run("baseline: a holder of ~/d/passwd moves and appends on", func(t *testing.T) { testSecBaseline(t, s) })
	t.Run("d becomes a link to the canary between check and restore", func(t *testing.T) { testSecSwap(t, s) })
	t.Run("a link planted on the destination for a node-local path", func(t *testing.T) { testSecPlanted(t, s) })
}

// secLab is the lab of TestSecurityMove.
type secLab struct {
	*migLab
	u       asUser
	release string
	canary  *canary
	holder  string // script: appends 1, 2, 3... to its argument through one descriptor held open
	// lurker holds its first argument open for append, writes nothing
	// until its second argument exists, then appends "lurker" lines.
	lurker string
}

// canary is a root-owned file in /etc that no user may write, in a
// directory of its own: the attacks point their links there.
type canary struct {
	dir, file string
	bytes     []byte
}

func newCanary(t *testing.T) *canary {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	c := &canary{dir: "/etc/ssi-canary-" + hex.EncodeToString(b)}
	c.file = c.dir + "/passwd"
	c.bytes = []byte("root:x:0:0:canary:/root:/bin/sh\n")
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(c.dir) })
	if err := os.WriteFile(c.file, c.bytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// intact fails the test unless the canary holds its bytes still.
func (c *canary) intact(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(c.file)
	if err != nil || string(b) != string(c.bytes) {
		t.Fatalf("the canary %s changed: %q (%v)", c.file, b, err)
	}
}

// nodeLocal makes the user's node-local directory mp: the same mount
// point on both nodes, bound from a directory of each node's own, with
// d/passwd in it, the user's, of the canary's size (what the old
// destination check compared). own(node) is that file on the host.
func (s *secLab) nodeLocal(t *testing.T) (mp string, own func(node string) string) {
	mp = filepath.Join(s.dir, "scratch")
	own = func(node string) string { return filepath.Join(s.dir, node, "d", "passwd") }
	pad := strings.Repeat("x", len(s.canary.bytes)-1) + "\n"
	for _, node := range []string{"node1", "node2"} {
		if err := os.MkdirAll(filepath.Dir(own(node)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(own(node), []byte(pad), 0o644); err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(s.dir, node)
		s.must("exec", node, "--", "sh", "-c", "mkdir -p "+mp+" && chown -R 1000:1000 "+src+" && mount --bind "+src+" "+mp)
	}
	return mp, own
}

// holding reports whether some process holds path open.
func holding(path string) bool {
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && l == path {
			return true
		}
	}
	return false
}

func (s *secLab) with(t *testing.T) *secLab {
	ss := *s
	ss.migLab = &migLab{clusterLab: s.clusterLab.with(t), dir: s.dir}
	return &ss
}

// asU runs argv as the test user in node and fails the test unless it
// works.
func (s *secLab) asU(node string, argv ...string) string {
	s.t.Helper()
	return s.must(s.u.cmd(node, argv...)...)
}

// moveErrno moves cpid to node2 by its where file, from node1, as the
// user, and returns the errno (0: moved).
func (s *secLab) moveErrno(cpid string) int {
	s.t.Helper()
	out := s.asU("node1", "python3", "-c", whereWritePy, "/cluster/proc/"+cpid+"/where", "node2")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		s.t.Fatalf("writing where: %q", out)
	}
	return n
}

func (s *secLab) cantmove(cpid string) string {
	return strings.TrimSpace(s.ssi("exec", "node1", "--", "cat", "/cluster/proc/"+cpid+"/cantmove").out)
}

// kill ends the user's process cpid.
func (s *secLab) kill(cpid string) {
	s.asU("node1", ssiBin, "kill", "-s", "KILL", cpid)
}

// testSecBaseline: the user's holder of ~/d/passwd in /cluster/home
// moves to node2 and goes on appending to its own file.
func testSecBaseline(t *testing.T, lab *secLab) {
	s := lab.with(t)
	home := s.homeOf(t, s.u)
	s.asU("node1", "mkdir", "-p", home+"/d")
	cpid := s.runDetachedAs(t, s.u, "node1", s.holder, home+"/d/passwd")
	n := s.waitGrows(t, "node1", homeRel(home, "d/passwd"), 3)
	if e := s.moveErrno(cpid); e != 0 {
		t.Fatalf("the baseline move: errno %d; cantmove %q", e, s.cantmove(cpid))
	}
	if got := s.where("node1", cpid); got != "node2" {
		t.Fatalf("after the baseline move, where reads %q", got)
	}
	s.waitGrows(t, "node2", homeRel(home, "d/passwd"), n+3)
	s.kill(cpid)
	s.canary.intact(t)
}

// testSecSwap: while the destination holds the arrival between its
// check and CRIU's restore, the user makes ~/b a link to the canary's
// directory. The process must not end up holding the canary: it holds
// its own file (CRIU never opens the path: it is handed the file the
// check opened as the user) or the move fails with EOPNOTSUPP.
func testSecSwap(t *testing.T, lab *secLab) {
	s := lab.with(t)
	home := s.homeOf(t, s.u)
	s.asU("node1", "mkdir", "-p", home+"/b")
	cpid := s.runDetachedAs(t, s.u, "node1", s.holder, home+"/b/passwd")
	n := s.waitGrows(t, "node1", homeRel(home, "b/passwd"), 3)

	e := s.moveHeld(cpid, func() {
		s.asU("node1", "sh", "-c", "mv "+home+"/b "+home+"/b.orig && ln -s "+s.canary.dir+" "+home+"/b")
		if got := s.asU("node1", "readlink", home+"/b"); strings.TrimSpace(got) != s.canary.dir {
			t.Fatalf("the swap did not happen: %q", got)
		}
	})
	s.canary.intact(t)
	switch e {
	case "0":
		if got := s.where("node1", cpid); got != "node2" {
			t.Fatalf("moved, but where reads %q", got)
		}
		// Moved: it appends to its own file, under its new name, and
		// to nothing else.
		eventually(t, "the moved process to append somewhere", 20*time.Second, func() bool {
			b, _ := os.ReadFile(s.canary.file)
			c, _ := countsInOrder(s.must("exec", "node2", "--", "cat", home+"/b.orig/passwd"))
			return string(b) != string(s.canary.bytes) || c > n+3
		})
		s.canary.intact(t)
		t.Log("moved; the process holds its own file")
	case "95":
		t.Logf("refused; cantmove: %s", s.cantmove(cpid))
		if got := s.where("node1", cpid); got != "node1" {
			t.Fatalf("refused, but where reads %q", got)
		}
		s.waitGrows(t, "node1", homeRel(home, "b.orig/passwd"), n+3)
	default:
		t.Fatalf("the move under attack: %q; want 0 or 95 (EOPNOTSUPP); cantmove %q", e, s.cantmove(cpid))
	}
	s.canary.intact(t)
	s.kill(cpid)
}

// moveHeld moves cpid to node2 as moveErrno does, with node2 holding the
// arrival between its check of the files and CRIU's restore while
// during runs; it returns what the where file's writer printed (the
// errno, "0" if moved).
func (s *secLab) moveHeld(cpid string, during func()) string {
	t := s.t
	t.Helper()
	paused := s.release + ".paused"
	for _, p := range []string{s.release, paused} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	// Whatever happens, the next arrivals are not held.
	t.Cleanup(func() { _ = os.WriteFile(s.release, nil, 0o600) })
	type moved struct {
		r   result
		err error
	}
	done := make(chan moved, 1)
	go func() {
		// Not t.Fatal: this is not the test's goroutine.
		r, err := run(cmdTimeout, s.env, nil, ssiBin, s.args(s.u.cmd("node1", "python3", "-c", whereWritePy,
			"/cluster/proc/"+cpid+"/where", "node2")...)...)
		done <- moved{r, err}
	}()
	eventually(t, "node2 to hold the arrival before its restore", time.Minute, func() bool {
		_, err := os.Stat(paused)
		return err == nil
	})
	during()
	if err := os.WriteFile(s.release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case mv := <-done:
		if mv.err != nil {
			t.Fatal(mv.err)
		}
		return strings.TrimSpace(mv.r.out)
	case <-time.After(cmdTimeout + 30*time.Second):
		t.Fatal("the move did not return")
	}
	return ""
}

// testSecPlanted: a node-local directory (the same mount point on both
// nodes, each node's own contents): on node2 the user has made d a link
// to the canary's directory beforehand. The user's file on node1 has the
// canary's size, and the process writes nothing until it is told to, so
// that a destination comparing sizes through the link would be fooled.
// The move is refused with EOPNOTSUPP, cantmove says why, and the
// process runs on at node1 with its own file. First, without the link,
// the same process moves.
func testSecPlanted(t *testing.T, lab *secLab) {
	s := lab.with(t)
	mp, own := s.nodeLocal(t)
	lurkers := func(node string) int {
		b, _ := os.ReadFile(own(node))
		return strings.Count(string(b), "lurker\n")
	}

	// Without the link: it moves, and appends to node2's file.
	cpid := s.runDetachedAs(t, s.u, "node1", s.lurker, mp+"/d/passwd", filepath.Join(s.dir, "go1"))
	eventually(t, "the process to hold its file", 20*time.Second, func() bool { return holding(mp + "/d/passwd") })
	if e := s.moveErrno(cpid); e != 0 {
		t.Fatalf("the move without the link: errno %d; cantmove %q", e, s.cantmove(cpid))
	}
	if err := os.WriteFile(filepath.Join(s.dir, "go1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the process to append on node2", 20*time.Second, func() bool { return lurkers("node2") > 2 })
	s.kill(cpid)

	// The user plants the link on node2, then moves the same program there.
	s.asU("node2", "sh", "-c", "mv "+mp+"/d "+mp+"/d.old && ln -s "+s.canary.dir+" "+mp+"/d")
	cpid = s.runDetachedAs(t, s.u, "node1", s.lurker, mp+"/d/passwd", filepath.Join(s.dir, "go2"))
	eventually(t, "the process to hold its file", 20*time.Second, func() bool { return holding(mp + "/d/passwd") })
	e := s.moveErrno(cpid)
	if err := os.WriteFile(filepath.Join(s.dir, "go2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if e != 95 {
		s.canary.intact(t)
		t.Fatalf("the move onto the planted link: errno %d, want 95 (EOPNOTSUPP); cantmove %q", e, s.cantmove(cpid))
	}
	cm := s.cantmove(cpid)
	t.Logf("refused; cantmove: %s", cm)
	if !strings.Contains(cm, "symbolic link") || strings.Contains(cm, "\n") {
		t.Errorf("cantmove after the refusal: %q, want one line naming the link", cm)
	}
	if got := s.where("node2", cpid); got != "node1" {
		t.Fatalf("after the refusal, where reads %q", got)
	}
	eventually(t, "the refused process to append on at node1", 20*time.Second, func() bool { return lurkers("node1") > 3 })
	s.kill(cpid)
	s.canary.intact(t)
}
