package integration

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The race of issue 12 against home.backend path: the shared directory
// is the same on every node, so a user on another node (here, on the
// host, straight in the directory) can turn a name into a symlink between
// this node's kernel's lookup and the request that follows it (a create
// after a failed lookup, a truncate or chmod after a successful one).
// The agent is root: if it followed that symlink, the user would write
// root's files.

// homeRaceEnv chooses a role of this test binary: the victim's loop on a
// node, or the attacker's in the shared directory (see homeRace).
const homeRaceEnv = "SSI_ITEST_HOMERACE"

func init() {
	if role := os.Getenv(homeRaceEnv); role != "" {
		os.Exit(homeRace(role, os.Args[1:]))
	}
}

// homeRace runs a role and prints what happened:
//   - victim PATH N: N times, in turn, creates PATH (O_CREAT|O_TRUNC) and
//     writes it, opens it for writing, truncates it, chmods it 0640;
//     prints how many calls ended how ("ok=..." then errno names);
//   - attacker PATH CANARY: until its standard input ends, replaces PATH
//     by a symlink to CANARY and removes it; prints how many times.
func homeRace(role string, args []string) int {
	switch {
	case role == "victim" && len(args) == 2:
		n, _ := strconv.Atoi(args[1])
		fmt.Println(homeVictimLoop(args[0], n))
		return 0
	case role == "attacker" && len(args) == 2:
		fmt.Println(homeAttackerLoop(args[0], args[1]))
		return 0
	}
	fmt.Fprintln(os.Stderr, "usage: victim PATH N | attacker PATH CANARY")
	return 2
}

// homeVictimLoop is the victim's part (see homeRace), for at most a minute.
func homeVictimLoop(path string, n int) string {
	counts := map[string]int{}
	deadline := time.Now().Add(time.Minute)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		var err error
		switch i % 4 {
		case 0, 1:
			flags := unix.O_WRONLY | unix.O_CLOEXEC
			if i%4 == 0 {
				flags |= unix.O_CREAT | unix.O_TRUNC
			}
			var fd int
			if fd, err = unix.Open(path, flags, 0o644); err == nil {
				_, err = unix.Write(fd, []byte("victim\n"))
				unix.Close(fd)
			}
		case 2:
			err = unix.Truncate(path, 0)
		case 3:
			err = unix.Chmod(path, 0o640)
		}
		var e syscall.Errno
		switch {
		case err == nil:
			counts["ok"]++
		case errors.As(err, &e):
			counts[unix.ErrnoName(e)]++
		default:
			counts[err.Error()]++
		}
	}
	var out []string
	for k, v := range counts {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// homeAttackerLoop is the attacker's part (see homeRace).
func homeAttackerLoop(path, canary string) string {
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	tmp := path + ".next"
	for n := 0; ; n++ {
		select {
		case <-stop:
			return fmt.Sprintf("swaps=%d", n)
		default:
		}
		_ = os.Remove(tmp)
		if err := os.Symlink(canary, tmp); err != nil {
			return "symlink: " + err.Error()
		}
		_ = os.Rename(tmp, path)
		_ = os.Remove(path)
	}
}

// homeCanary is a root-owned file in a root-owned directory of /etc, and
// what it must stay.
type homeCanary struct {
	dir, path string
	data      []byte
	st        unix.Stat_t
}

func newHomeCanary(t *testing.T) *homeCanary {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	c := &homeCanary{dir: "/etc/ssi-canary-" + hex.EncodeToString(b), data: []byte("root's own\n")}
	c.path = filepath.Join(c.dir, "canary")
	if err := os.Mkdir(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(c.dir) })
	if err := os.WriteFile(c.path, c.data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(c.path, &c.st); err != nil {
		t.Fatal(err)
	}
	return c
}

// check fails t if the canary's bytes, mode, owner or change time moved,
// or if anything appeared next to it.
func (c *homeCanary) check(t *testing.T) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(c.path, &st); err != nil {
		t.Fatalf("canary: %v", err)
	}
	if st.Mode != c.st.Mode || st.Uid != 0 || st.Gid != 0 || st.Ctim != c.st.Ctim {
		t.Errorf("canary changed: mode %o owner %d:%d ctime %v (was mode %o ctime %v)", st.Mode, st.Uid, st.Gid, st.Ctim, c.st.Mode, c.st.Ctim)
	}
	if b, err := os.ReadFile(c.path); err != nil || !bytes.Equal(b, c.data) {
		t.Errorf("canary holds %q, %v", b, err)
	}
	if entries, err := os.ReadDir(c.dir); err != nil || len(entries) != 1 {
		t.Errorf("the canary's directory holds %v, %v", entries, err)
	}
}

// startHomeAttacker runs the attacker as the user on the host, on the
// shared directory; the returned function stops it and returns what it
// printed.
func startHomeAttacker(t *testing.T, path, canary string) func() string {
	t.Helper()
	cmd := exec.Command(testBin, path, canary)
	cmd.Env = append(os.Environ(), homeRaceEnv+"=attacker")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() string {
		if !stopped {
			stopped = true
			stdin.Close()
			if err := waitFor(cmd, 30*time.Second); err != nil {
				t.Errorf("attacker: %v: %s", err, out.String())
			}
		}
		return strings.TrimSpace(out.String())
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestSecurityHomeSymlinkRace: with home.backend path, a user who turns
// a name into a symlink to a root-owned file while a process on a node
// creates, opens, truncates or chmods it gets nothing of root's: the
// canary in /etc keeps its bytes and mode.
func TestSecurityHomeSymlinkRace(t *testing.T) {
	needRoot(t)
	shared, own := sharedHome(t)
	canary := newHomeCanary(t)
	c := newClusterLabEnv(t, "itsechm", []string{"SSI_LAB_SUBNET=10.213.81.0/24",
		"SSI_HOME_BACKEND=path", "SSI_HOME_PATH=" + shared}, "--nodes", "2")
	u := asUser{1000, "-uid1000"}

	// Without the attack: the user's file, written on node1, is the
	// user's and reads back on node2; the victim's loop succeeds.
	c.must(u.cmd("node1", "sh", "-c", "echo mine > /cluster/home/u1000/mine")...)
	if got := c.must(u.cmd("node2", "cat", "/cluster/home/u1000/mine")...); got != "mine\n" {
		t.Fatalf("node2 reads %q", got)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(own, "mine"), &st); err != nil || st.Uid != 1000 || st.Gid != 1000 {
		t.Fatalf("the user's file in the shared directory: %d:%d, %v", st.Uid, st.Gid, err)
	}
	victim := func(n int) string {
		return strings.TrimSpace(c.must(u.cmd("node1", "env", homeRaceEnv+"=victim", testBin, "/cluster/home/u1000/x", strconv.Itoa(n))...))
	}
	if got := victim(40); got != "ok=40" {
		t.Fatalf("the victim's loop without the attack: %s", got)
	}

	stop := startHomeAttacker(t, filepath.Join(own, "x"), canary.path)
	got := victim(20000)
	t.Logf("victim: %s; attacker: %s", got, stop())
	canary.check(t)
	// The agent refused a symlink (ELOOP to open or create through it,
	// EINVAL or ENOTSUP to truncate or chmod it) only if the swap landed
	// between a lookup and the request after it: the attack was made, not
	// missed. (With go-fuse's loopback, the canary held "victim\n".)
	if refusedSymlinks(got) == 0 {
		t.Errorf("the race never reached the agent: %s", got)
	}
}

// sharedHome is the shared directory, everyone's to reach, and in it
// uid 1000's own.
func sharedHome(t *testing.T) (shared, own string) {
	t.Helper()
	shared = t.TempDir()
	openToAll(t, shared)
	own = filepath.Join(shared, "u1000")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(own, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	return shared, own
}

// refusedSymlinks counts, in the victim's output, the calls that the
// agent failed for meeting a symlink.
func refusedSymlinks(counts string) int {
	refused := 0
	for _, kv := range strings.Fields(counts) {
		name, n, _ := strings.Cut(kv, "=")
		if k, err := strconv.Atoi(n); err == nil && (name == "ELOOP" || name == "EINVAL" || name == "ENOTSUP") {
			refused += k
		}
	}
	return refused
}
