package integration

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

// alive reports whether a started command's process still runs.
func alive(cmd *exec.Cmd) bool {
	return syscall.Kill(cmd.Process.Pid, 0) == nil && !zombie(cmd.Process.Pid)
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || len(s) < i+3 || s[i+2] == 'Z'
}

// TestHome: /cluster/home holds the same files on every node.
func TestHome(t *testing.T) {
	c := newClusterLab(t, "ithome", "10.213.17.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)

	t.Run("100 MiB written on node1 reads the same on node2 and node3", func(t *testing.T) { testHomeBigFile(t, c) })
	t.Run("posix", func(t *testing.T) { testHomePosix(t, c) })
	t.Run("permissions", func(t *testing.T) { testHomePermissions(t, c) })
	t.Run("a node without quorum refuses writes and serves reads", func(t *testing.T) { testHomeNoQuorum(t, c) })
}

// testHomeBigFile: 100 MiB written on node1 read on node2 and node3.
func testHomeBigFile(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	sum := c.must("exec", "node1", "--", "sh", "-c",
		"head -c 104857600 /dev/urandom > /cluster/home/big && sha256sum < /cluster/home/big")
	for _, n := range []string{"node2", "node3"} {
		if got := c.must("exec", n, "--", "sh", "-c", "sha256sum < /cluster/home/big"); got != sum {
			t.Fatalf("%s reads %q, node1 wrote %q", n, got, sum)
		}
	}
}

// testHomePosix: links, renames over, truncate and an unlinked open
// file, then node3's view of the result.
func testHomePosix(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	script := `set -e; cd /cluster/home
			mkdir -p d1/d2; echo one > d1/f; echo two >> d1/f
			ln d1/f hard; ln -s d1/f soft
			mv d1/f d1/d2/g; echo new > other; mv other d1/d2/g
			printf abcdef > t; truncate -s 3 t
			exec 3< d1/d2/g; rm d1/d2/g
			echo "$(cat hard)|$(cat soft 2>/dev/null || echo dangling)|$(cat t)|$(stat -c %h hard)"
			rmdir d1 2>/dev/null && echo rmdir-nonempty-worked || true`
	out := c.must("exec", "node1", "--", "bash", "-c", script)
	// hard still names the first file (its data survived the renames
	// and the replacement of g); soft pointed at d1/f, now moved.
	want := "one\ntwo|dangling|abc|1\n"
	if out != want {
		t.Fatalf("posix script printed %q, want %q", out, want)
	}
	got := c.must("exec", "node3", "--", "sh", "-c", "cd /cluster/home && ls -1 && cat hard")
	if got != "big\nd1\nhard\nsoft\nt\none\ntwo\n" {
		t.Fatalf("node3 sees %q", got)
	}
}

// testHomePermissions: a user's writes and chmod/chown, as the
// owner and mode bits allow.
func testHomePermissions(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	c.must("exec", "node1", "--", "sh", "-c",
		"mkdir /cluster/home/user && chown 1000:1000 /cluster/home/user && echo secret > /cluster/home/root-only && chmod 600 /cluster/home/root-only")
	asUser := func(node, cmd string) result {
		return c.ssi("exec", node, "--", "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "bash", "-c", cmd)
	}
	if r := asUser("node2", "echo mine > /cluster/home/user/f && cat /cluster/home/user/f"); r.code != 0 || r.out != "mine\n" {
		t.Fatalf("user writing in its own directory: %d %q %q", r.code, r.out, r.err)
	}
	if r := asUser("node2", "cat /cluster/home/root-only"); r.code == 0 || !strings.Contains(r.err, "Permission denied") {
		t.Fatalf("user reading a 0600 root file: %d %q", r.code, r.err)
	}
	if r := asUser("node3", "echo x > /cluster/home/new"); r.code == 0 || !strings.Contains(r.err, "Permission denied") {
		t.Fatalf("user creating in root's directory: %d %q", r.code, r.err)
	}
	if r := asUser("node3", "chmod 777 /cluster/home/root-only"); r.code == 0 || !strings.Contains(r.err, "Operation not permitted") {
		t.Fatalf("user chmod of root's file: %d %q", r.code, r.err)
	}
	if r := asUser("node3", "chown 0 /cluster/home/user/f"); r.code == 0 || !strings.Contains(r.err, "Operation not permitted") {
		t.Fatalf("user chown: %d %q", r.code, r.err)
	}
	if got := c.must("exec", "node1", "--", "stat", "-c", "%U %a", "/cluster/home/user/f"); got != "1000 644\n" && !strings.HasSuffix(got, " 644\n") {
		t.Fatalf("the user's file on node1: %q", got)
	}
}

// testHomeNoQuorum: partitioned node3 reads but refuses writes.
func testHomeNoQuorum(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	c.must("partition", "node3")
	defer c.must("heal", "node3")
	eventually(t, "node3 to lose quorum", 20*time.Second, func() bool {
		s, ok := c.status("node3")
		return ok && !s.Quorum
	})
	if got := c.must("exec", "node3", "--", "cat", "/cluster/home/t"); got != "abc" {
		t.Fatalf("read without quorum: %q", got)
	}
	r := c.ssi("exec", "node3", "--", "bash", "-c", "echo lost > /cluster/home/t")
	if r.code == 0 || !strings.Contains(r.err, "Read-only file system") {
		t.Fatalf("write without quorum: %d %q", r.code, r.err)
	}
	if got := c.must("exec", "node1", "--", "cat", "/cluster/home/t"); got != "abc" {
		t.Fatalf("a refused write changed the file: %q", got)
	}
}

// TestHomeLimitsAndCrash: limits answer EFBIG and ENOSPC without partial
// writes; a node killed while another writes loses no acknowledged write.
func TestHomeLimitsAndCrash(t *testing.T) {
	needRoot(t)
	c := newClusterLabEnv(t, "itcrash", []string{"SSI_LAB_SUBNET=10.213.18.0/24",
		// Agents inherit the lab's environment; node1 records the limits.
		"SSI_HOME_MAX_FILE_SIZE=1048576", "SSI_HOME_QUOTA=3145728"}, "--nodes", "3")
	c.agree("node1", three, 5*time.Second)

	r := c.ssi("exec", "node2", "--", "dd", "if=/dev/zero", "of=/cluster/home/toobig", "bs=512K", "count=3")
	if r.code == 0 || !strings.Contains(r.err, "File too large") {
		t.Fatalf("a 1.5 MiB file with a 1 MiB limit: %d %q", r.code, r.err)
	}
	if got := c.must("exec", "node3", "--", "stat", "-c", "%s", "/cluster/home/toobig"); got != "1048576\n" {
		t.Fatalf("after EFBIG the file holds %q bytes, want the 1 MiB that fit", got)
	}
	r = c.ssi("exec", "node2", "--", "bash", "-c",
		"for i in 1 2 3; do dd if=/dev/zero of=/cluster/home/fill$i bs=1M count=1 status=none || exit 9; done")
	if r.code != 9 || !strings.Contains(r.err, "No space left") {
		t.Fatalf("filling a 3 MiB quota: %d %q", r.code, r.err)
	}
	c.must("exec", "node2", "--", "sh", "-c", "rm -f /cluster/home/toobig /cluster/home/fill*")

	st, _ := c.status("node1")
	victim := st.Leader
	writer := "node2"
	if victim == "node2" {
		writer = "node3"
	}
	acks := &syncBuffer{}
	w := c.background(acks, "exec", writer, "--", "bash", "-c",
		"for i in $(seq 1 400); do echo $i >> /cluster/home/log || exit 1; echo ack $i; done")
	defer stop(t, w)
	eventually(t, "50 acknowledged appends", 60*time.Second, func() bool {
		return strings.Count(acks.String(), "ack ") >= 50
	})
	c.must("kill", victim)
	eventually(t, "the writer to finish", 120*time.Second, func() bool { return !alive(w) })
	c.must("start", victim)
	last := strings.Count(acks.String(), "ack ")
	if last < 60 {
		t.Fatalf("only %d appends were acknowledged", last)
	}
	for _, n := range three {
		var got string
		eventually(t, n+" to hold every acknowledged line", 30*time.Second, func() bool {
			r := c.ssi("exec", n, "--", "cat", "/cluster/home/log")
			got = r.out
			return r.code == 0 && len(strings.Fields(got)) >= last
		})
		for i, f := range strings.Fields(got) {
			if f != itoa(i+1) {
				t.Fatalf("%s: line %d is %q (acknowledged %d)", n, i+1, f, last)
			}
		}
	}
}

// TestHomePathBackend: home.backend path serves an existing shared
// directory as /cluster/home on every node, files owned by their creator.
func TestHomePathBackend(t *testing.T) {
	needRoot(t)
	shared := t.TempDir()
	openToAll(t, shared)
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	c := newClusterLabEnv(t, "itpath", []string{"SSI_LAB_SUBNET=10.213.19.0/24",
		"SSI_HOME_BACKEND=path", "SSI_HOME_PATH=" + shared}, "--nodes", "3")
	c.must("exec", "node1", "--", "sh", "-c", "echo hi > /cluster/home/a")
	if got := c.must("exec", "node2", "--", "cat", "/cluster/home/a"); got != "hi\n" {
		t.Fatalf("node2 reads %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(shared, "a")); err != nil || string(b) != "hi\n" {
		t.Fatalf("the shared directory holds %q, %v", b, err)
	}
	c.must("exec", "node3", "--", "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
		"sh", "-c", "echo mine > /cluster/home/u")
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(shared, "u"), &st); err != nil || st.Uid != 1000 {
		t.Fatalf("a user's file in the shared directory: uid %d, %v", st.Uid, err)
	}
}

// TestHomeOpenFiles: a file unlinked while open stays readable and
// writable for its holder and its space comes back at the last close;
// mmap reads and shared writes reach other nodes; the kernel's cached
// pages never hide another node's change; file locks exclude on a node.
func TestHomeOpenFiles(t *testing.T) {
	c := newClusterLab(t, "ithopen", "10.213.41.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)

	t.Run("unlinked while open", func(t *testing.T) { testHomeUnlinkedOpen(t, c) })
	t.Run("pages cached on one node never hide another node's change", func(t *testing.T) { testHomeCachedPages(t, c) })
	t.Run("mmap", func(t *testing.T) { testHomeMmap(t, c) })
	t.Run("locks exclude on one node", func(t *testing.T) { testHomeLocks(t, c) })
}

// freeBlocks is the home's free blocks as statfs on node reports them.
func freeBlocks(c *clusterLab, node string) string {
	return strings.TrimSpace(c.must("exec", node, "--", "stat", "-f", "-c", "%f", "/cluster/home"))
}

// testHomeUnlinkedOpen: an unlinked open file lives on for its holder,
// and its space comes back at the last close or at the holder node's
// restart; freeBlocks asks through lab, the whole test's.
func testHomeUnlinkedOpen(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	before := freeBlocks(lab, "node2")
	script := `set -e; cd /cluster/home
			head -c 1048576 /dev/urandom > u; sum=$(sha256sum < u)
			exec 3< u 4>> u; rm u
			[ ! -e u ] || { echo "u still there"; exit 1; }
			[ "$(sha256sum <&3)" = "$sum" ] || { echo "content changed"; exit 1; }
			echo tail >&4
			stat -L -c '%h %s' /proc/self/fd/3
			tail -c 5 /proc/self/fd/3
			ls -A`
	out := c.must("exec", "node1", "--", "bash", "-c", script)
	if want := "0 1048581\ntail\n"; out != want {
		t.Fatalf("the holder saw %q, want %q (nothing listed in the directory)", out, want)
	}
	if got := c.must("exec", "node2", "--", "ls", "-A", "/cluster/home"); got != "" {
		t.Fatalf("node2 lists %q", got)
	}
	// The holder's shell has exited: its last release frees the space
	// (RELEASE reaches the agent after close returns).
	eventually(t, "the unlinked file's space to come back", 20*time.Second, func() bool {
		return freeBlocks(lab, "node2") == before
	})
	// A node that crashes while holding one removes it when it
	// starts again.
	c.must("exec", "node1", "--", "sh", "-c", "head -c 1048576 /dev/zero > /cluster/home/held")
	holder := c.background(io.Discard, "exec", "node1", "--", "bash", "-c",
		"exec 3< /cluster/home/held; rm /cluster/home/held; echo unlinked; sleep 600")
	defer stop(t, holder)
	eventually(t, "the holder to unlink the file", 20*time.Second, func() bool {
		r := c.ssi("exec", "node2", "--", "test", "-e", "/cluster/home/held")
		return r.code == 1
	})
	if freeBlocks(lab, "node2") == before {
		t.Fatal("an unlinked file held open freed its space")
	}
	c.must("kill", "node1")
	c.must("start", "node1")
	eventually(t, "node1's restart to remove what its holder kept", 60*time.Second, func() bool {
		return freeBlocks(lab, "node2") == before
	})
	r := c.ssi("exec", "node1", "--", "mkdir", "/cluster/home/.ssi-orphans")
	if r.code == 0 || !strings.Contains(r.err, "Operation not permitted") {
		t.Fatalf("mkdir of the orphan directory: %d %q", r.code, r.err)
	}
}

// testHomeCachedPages: a node's page cache never hides a change made
// on another node.
func testHomeCachedPages(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	c.must("exec", "node1", "--", "sh", "-c", "printf 'first version\n' > /cluster/home/cached")
	for i := 0; i < 2; i++ { // the second read may come from the page cache
		if got := c.must("exec", "node2", "--", "cat", "/cluster/home/cached"); got != "first version\n" {
			t.Fatalf("node2 read %d: %q", i, got)
		}
	}
	// Same size, new content: only the data version tells them apart.
	c.must("exec", "node1", "--", "sh", "-c", "printf 'other version\n' > /cluster/home/cached")
	if got := c.must("exec", "node2", "--", "cat", "/cluster/home/cached"); got != "other version\n" {
		t.Fatalf("node2 after node1's rewrite: %q", got)
	}
	// And the writer's own node sees a write made in place elsewhere.
	c.must("exec", "node2", "--", "sh", "-c", "printf X | dd of=/cluster/home/cached bs=1 seek=0 conv=notrunc status=none")
	if got := c.must("exec", "node1", "--", "cat", "/cluster/home/cached"); got != "Xther version\n" {
		t.Fatalf("node1 after node2's write in place: %q", got)
	}
}

// testHomeMmap: a shared mapping's writes reach other nodes.
func testHomeMmap(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for mmap")
	}
	writer := `import mmap, os
p = "/cluster/home/mapped"
with open(p, "wb") as f:
    f.write(b"a" * 8192)
fd = os.open(p, os.O_RDWR)
m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:5] = b"HELLO"
m[4096:4101] = b"WORLD"
m.flush()
m.close()
os.close(fd)`
	c.must("exec", "node1", "--", "python3", "-c", writer)
	reader := `import mmap
with open("/cluster/home/mapped", "rb") as f:
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    print(m[0:6].decode(), m[4096:4102].decode(), len(m))`
	for _, n := range []string{"node1", "node3"} {
		if got := c.must("exec", n, "--", "python3", "-c", reader); got != "HELLOa WORLDa 8192\n" {
			t.Fatalf("%s maps %q", n, got)
		}
	}
}

// testHomeLocks: flock and fcntl locks exclude on one node.
func testHomeLocks(t *testing.T, lab *clusterLab) {
	c := lab.with(t)
	script := `cd /cluster/home; : > lk; m=/tmp/ssi-held-$$
			flock -x lk -c "touch $m; sleep 3" &
			for i in $(seq 200); do [ -e $m ] && break; sleep 0.05; done
			flock -n lk true && echo free || echo busy
			wait; rm -f $m
			flock -n lk true && echo free || echo busy`
	if got := c.must("exec", "node1", "--", "bash", "-c", script); got != "busy\nfree\n" {
		t.Fatalf("flock on one node, held then released: %q", got)
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("needs python3 for fcntl locks")
	}
	fcntl := `import fcntl, os, sys, time
f = open("/cluster/home/lk", "r+")
fcntl.lockf(f, fcntl.LOCK_EX)
r, w = os.pipe()
if os.fork() == 0:
    g = open("/cluster/home/lk", "r+")
    try:
        fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(w, b"free")
    except OSError:
        os.write(w, b"busy")
    os._exit(0)
os.wait()
print(os.read(r, 4).decode())`
	if got := c.must("exec", "node1", "--", "python3", "-c", fcntl); got != "busy\n" {
		t.Fatalf("fcntl lock on one node: %q", got)
	}
}
