package integration

import (
	"errors"
	"fmt"
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

// The acceptance tests of issue 10 for real programs: each is started and
// moved by a normal user (uid 1000), its files in that user's own
// directory of /cluster/home, and moved at least twice while it runs.

// progHome is the test user's own directory in /cluster/home.
const progHome = "/cluster/home/itprog"

// progUID is the test user: not root, like every shell user.
const progUID = "1000"

// procPy answers each line of stdin with what it reads of itself in
// /proc (its pid, status Name and Pid, stat pid and comm), what `ps -e`
// lists, as "pid,comm" pairs, who it and its init are (uid and effective
// capabilities), and whether it sees the node's file argv[1] in /tmp.
const procPy = `import os, subprocess, sys
for _ in sys.stdin:
    pid = os.getpid()
    status = dict(l.split(":", 1) for l in open("/proc/%d/status" % pid).read().splitlines() if ":" in l)
    stat = open("/proc/self/stat").read().split()
    ps = subprocess.run(["ps", "-e", "-o", "pid=,comm="], capture_output=True, text=True).stdout.split()
    init = dict(l.split(":", 1) for l in open("/proc/1/status").read().splitlines() if ":" in l)
    creds = "%s/%s/%s/%s" % (status["Uid"].split()[0], status["CapEff"].strip(), init["Uid"].split()[0], init["CapEff"].strip())
    print(pid, status["Name"].strip(), status["Pid"].strip(), stat[0], stat[1], ",".join(ps), creds,
          os.path.exists(sys.argv[1]), flush=True)
`

// sqlitePy writes N rows, one transaction each, holding the database's
// lock all along (locking_mode EXCLUSIVE), and reports every 100 rows on
// stdout or in a progress file, then "done". WAL with synchronous NORMAL,
// as most programs configure it: a commit does not wait for an fsync.
const sqlitePy = `import sqlite3, sys, time
path, n = sys.argv[1], int(sys.argv[2])
out = open(sys.argv[3], "a", buffering=1) if len(sys.argv) > 3 else sys.stdout
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA locking_mode=EXCLUSIVE")
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS t (i INTEGER PRIMARY KEY, v TEXT)")
for i in range(1, n + 1):
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?)", (i, "row %d" % i))
    db.execute("COMMIT")
    if i % 100 == 0:
        print(i, file=out, flush=True)
    time.sleep(0.002)
db.close()
print("done", file=out, flush=True)
`

// sqliteCheckPy prints the table's row count, smallest and largest key
// and integrity_check; or "locked" if another process holds the lock.
const sqliteCheckPy = `import sqlite3, sys
try:
    db = sqlite3.connect(sys.argv[1], timeout=0)
    print(*db.execute("SELECT count(*), min(i), max(i) FROM t").fetchone(), db.execute("PRAGMA integrity_check").fetchone()[0])
except sqlite3.OperationalError as e:
    print("locked" if "locked" in str(e) else "error: %s" % e)
`

// whereWritePy writes a node's name to a process's where file and prints
// the errno the write got (0: it moved): what a program sees, not what a
// shell makes of it.
const whereWritePy = `import os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY)
    os.write(fd, sys.argv[2].encode())
    os.close(fd)
    print(0)
except OSError as e:
    print(e.errno)
`

// progJava sums a function over 0..n-1 in each round, split among
// threads of a pool, and prints each round's sum and the total.
const progJava = `import java.util.*;
import java.util.concurrent.*;

public class Prog {
    public static void main(String[] a) throws Exception {
        int threads = Integer.parseInt(a[0]), rounds = Integer.parseInt(a[1]);
        long n = Long.parseLong(a[2]);
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        long total = 0;
        for (int r = 1; r <= rounds; r++) {
            final int round = r;
            List<Future<Long>> parts = new ArrayList<>();
            for (int t = 0; t < threads; t++) {
                final int first = t;
                parts.add(pool.submit(() -> {
                    long s = 0;
                    for (long k = first; k < n; k += threads) s += (k * round + k / 7) % 1009;
                    return s;
                }));
            }
            long sum = 0;
            for (Future<Long> f : parts) sum += f.get();
            total += sum;
            System.out.println("round " + r + " " + sum);
            Thread.sleep(100);
        }
        pool.shutdown();
        System.out.println("total " + total);
    }
}
`

// javaRound is what Prog.java computes in round r.
func javaRound(r, n int64) int64 {
	var s int64
	for k := int64(0); k < n; k++ {
		s += (k*r + k/7) % 1009
	}
	return s
}

// serverJS ticks a timer and serves HTTP on a port the kernel picks, on
// every address; /quit ends it.
const serverJS = `const http = require('http');
let ticks = 0, reqs = 0;
const timer = setInterval(() => { ticks++; if (ticks % 20 === 0) console.log('tick ' + ticks); }, 50);
const srv = http.createServer((req, res) => {
  reqs++;
  res.setHeader('Connection', 'close');
  if (req.url === '/quit') {
    res.end('bye ' + reqs + '\n', () => { clearInterval(timer); srv.close(); console.log('done ' + reqs); });
    return;
  }
  res.end('hello ' + reqs + '\n');
});
srv.listen(0, () => console.log('port ' + srv.address().port));
`

// watchPy watches a directory with inotify and runs a fifo pair: a child
// writes 1, 2, 3... into a fifo in the job's /tmp, the program reads
// them. It prints "event NAME" for each file closed after writing in the
// directory, and for each line of stdin how many numbers came through
// the fifo and whether in order; at EOF it exits 0 if all was well.
const watchPy = `import ctypes, os, select, struct, sys, time
libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CLOSE_WRITE = 0x8
ino = libc.inotify_init1(os.O_CLOEXEC)
if ino < 0 or libc.inotify_add_watch(ino, sys.argv[1].encode(), IN_CLOSE_WRITE) < 0:
    sys.exit("inotify: errno %d" % ctypes.get_errno())
os.mkfifo("/tmp/fifo")
writer = os.fork()
if writer == 0:
    w = open("/tmp/fifo", "w", buffering=1)
    i = 0
    while True:
        i += 1
        w.write("%d\n" % i)
        time.sleep(0.02)
fifo = os.open("/tmp/fifo", os.O_RDONLY)
got, part, in_order = 0, b"", True
print("ready", flush=True)
while True:
    ready, _, _ = select.select([ino, fifo, 0], [], [])
    if fifo in ready:
        part += os.read(fifo, 65536)
        *lines, part = part.split(b"\n")
        for l in lines:
            got += 1
            in_order = in_order and int(l) == got
    if ino in ready:
        buf = os.read(ino, 65536)
        while buf:
            n = struct.unpack_from("iIII", buf)[3]
            print("event", buf[16:16 + n].rstrip(b"\0").decode(), flush=True)
            buf = buf[16 + n:]
    if 0 in ready:
        if not sys.stdin.readline():
            os.kill(writer, 9)
            os.waitpid(writer, 0)
            sys.exit(0 if in_order and got > 0 else 1)
        print("fifo", got, "in order" if in_order else "OUT OF ORDER", flush=True)
`

// deletedPy keeps a file of its /tmp open after deleting it and answers
// each line of stdin with whether its content is intact and its name
// still gone.
const deletedPy = `import os, sys
data = "".join("line %d\n" % i for i in range(20000))
f = open("/tmp/scratch", "w+")
f.write(data)
f.flush()
os.unlink("/tmp/scratch")
print("ready", flush=True)
for _ in sys.stdin:
    f.seek(0)
    print("intact" if f.read() == data else "changed", "back" if os.path.exists("/tmp/scratch") else "gone", flush=True)
`

// kernelPy holds what real programs hold besides files: an eventfd, an
// armed timerfd, a signalfd, a POSIX timer, a socketpair, a listening unix
// socket in the job's /tmp, SysV shared memory (the job's own IPC
// namespace) and a second thread. Each "check" exercises all of them and
// answers "ok N" (N: checks so far, kept in the SysV segment) or what is
// wrong.
const kernelPy = `import ctypes, os, signal, socket, struct, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
bad = []
efd = os.eventfd(0)
tfd = libc.timerfd_create(1, 0)
# Armed for an hour: CRIU 4.2.1 brings back disarmed a periodic timerfd
# whose next expiry fell inside the freeze (see README, What moves).
its = struct.pack("llll", 3600, 0, 3600, 0)
assert libc.timerfd_settime(tfd, 0, its, None) == 0
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
mask = struct.pack("Q", 1 << (signal.SIGUSR1 - 1))
sfd = libc.signalfd(-1, mask, 0)
ticks = [0]
signal.signal(signal.SIGUSR2, lambda *a: ticks.__setitem__(0, ticks[0] + 1))
sev = struct.pack("qii", 0, signal.SIGUSR2, 0) + bytes(48)
tid = ctypes.c_void_p()
assert libc.timer_create(1, sev, ctypes.byref(tid)) == 0
assert libc.timer_settime(tid, 0, struct.pack("llll", 0, 20000000, 0, 20000000), None) == 0
a, b = socket.socketpair()
srv = socket.socket(socket.AF_UNIX)
srv.bind("/tmp/k.sock")
srv.listen()
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget(0, 4096, 0o1000 | 0o600)
addr = libc.shmat(shmid, None, 0)
counter = ctypes.c_long.from_address(addr)
beats = [0]
def beat():
    while True:
        beats[0] += 1
        time.sleep(0.01)
threading.Thread(target=beat, daemon=True).start()
print("ready", flush=True)
for _ in sys.stdin:
    bad = []
    os.eventfd_write(efd, 3)
    if os.eventfd_read(efd) != 3: bad.append("eventfd")
    cur = ctypes.create_string_buffer(32)
    libc.timerfd_gettime(tfd, cur)
    isec, insec, vsec, vnsec = struct.unpack("llll", cur.raw)
    if (isec, insec) != (3600, 0) or not (0 < vsec * 10**9 + vnsec <= 3600 * 10**9): bad.append("timerfd")
    os.kill(os.getpid(), signal.SIGUSR1)
    if struct.unpack("I", os.read(sfd, 128)[:4])[0] != signal.SIGUSR1: bad.append("signalfd")
    t0 = ticks[0]; time.sleep(0.1)
    if ticks[0] <= t0: bad.append("posix timer")
    a.sendall(b"ping")
    if b.recv(4) != b"ping": bad.append("socketpair")
    c = socket.socket(socket.AF_UNIX); c.connect("/tmp/k.sock"); s, _ = srv.accept()
    c.sendall(b"pong")
    if s.recv(4) != b"pong": bad.append("unix listener")
    c.close(); s.close()
    b0 = beats[0]; time.sleep(0.1)
    if beats[0] <= b0: bad.append("thread")
    counter.value += 1
    print(("bad " + ",".join(bad)) if bad else "ok %d" % counter.value, flush=True)
# The timer must not outlive the handler: Python's exit restores the
# default action, and SIGUSR2's kills.
signal.signal(signal.SIGUSR2, signal.SIG_IGN)
libc.timer_delete(tid)
`

// progLab runs the test user's programs on a lab.
type progLab struct {
	*migLab
	addrs map[string]string // node name -> IP address
}

// progArgv is argv run as the test user in dir, with a plain environment.
func progArgv(dir string, argv ...string) []string {
	return append([]string{"setpriv", "--reuid", progUID, "--regid", progUID, "--clear-groups",
		"env", "PATH=/usr/bin:/bin", "HOME=" + progHome, "sh", "-c", `cd "$0" && exec "$@"`, dir}, argv...)
}

// user runs argv in node as the test user, in dir.
func (p *progLab) user(node, dir string, argv ...string) result {
	p.t.Helper()
	return p.ssi(append([]string{"exec", node, "--"}, progArgv(dir, argv...)...)...)
}

// mustUser is user, failing the test unless argv exits 0.
func (p *progLab) mustUser(node, dir string, argv ...string) string {
	p.t.Helper()
	r := p.user(node, dir, argv...)
	if r.code != 0 {
		p.t.Fatalf("as uid %s on %s: %s: exit %d\nstdout: %s\nstderr: %s", progUID, node, strings.Join(argv, " "), r.code, r.out, r.err)
	}
	return r.out
}

// writeWhere writes to (a node's name) to cpid's where file, as the test
// user on node, and returns the errno the write got: 0 if it moved.
func (p *progLab) writeWhere(node, cpid, to string) int {
	p.t.Helper()
	out := p.mustUser(node, progHome, "python3", "-c", whereWritePy, "/cluster/proc/"+cpid+"/where", to)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		p.t.Fatalf("writing where: %q", out)
	}
	return n
}

// move moves cpid to to as the test user, from node, by writing to where
// or with ssi migrate, and checks that another node agrees where it is.
func (p *progLab) move(how, node, cpid, to string) {
	p.t.Helper()
	start := time.Now()
	switch how {
	case "where":
		if e := p.writeWhere(node, cpid, to); e != 0 {
			p.t.Fatalf("moving %s to %s by its where file from %s: errno %d (%v); cantmove: %q", cpid, to, node, e,
				errnoName(e), p.reason(node, cpid))
		}
	default:
		if r := p.user(node, progHome, ssiBin, "migrate", cpid, to); r.code != 0 {
			p.t.Fatalf("ssi migrate %s %s from %s: exit %d: %s; cantmove: %q", cpid, to, node, r.code,
				strings.TrimSpace(r.err), p.reason(node, cpid))
		}
	}
	p.t.Logf("moved %s to %s (%s from %s) in %v", cpid, to, how, node, time.Since(start).Round(time.Millisecond))
	other := "node1"
	if to == "node1" {
		other = "node2"
	}
	if got := p.where(other, cpid); got != to {
		p.t.Fatalf("after its move to %s, where on %s reads %q", to, other, got)
	}
}

func errnoName(e int) string {
	return syscall.Errno(e).Error()
}

func (p *progLab) cantmove(node, cpid string) string {
	return strings.TrimSpace(p.ssi("exec", node, "--", "cat", "/cluster/proc/"+cpid+"/cantmove").out)
}

// reason is cantmove for a failure message: given a few seconds to say
// why, since it may lag behind a failed move (the check after such a
// move is the fail-dump test's).
func (p *progLab) reason(node, cpid string) string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		cm := p.cantmove(node, cpid)
		if cm != "" || time.Now().After(deadline) {
			return cm
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// program is one attached `ssi run` of the test user's: its stdin, its
// output line by line, and its end.
type program struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *lineReader
	name  string
	cpid  string
	ended bool
}

// start runs argv attached with ssi run, as the test user, in dir on
// node1; name (a word of argv no other program has) finds its cpid.
func (p *progLab) start(t *testing.T, dir, name string, argv ...string) *program {
	t.Helper()
	a := append([]string{"exec", "node1", "--"}, progArgv(dir, append([]string{ssiBin, "run", "--"}, argv...)...)...)
	cmd, in, out := p.attached(t, a...)
	pr := &program{t: t, cmd: cmd, in: in, out: out, name: name}
	t.Cleanup(func() {
		if !pr.ended {
			stop(t, cmd)
		}
	})
	pr.cpid = p.cpidOf(t, name)
	return pr
}

// line waits for the program's next line of output.
func (pr *program) line(d time.Duration) string {
	pr.t.Helper()
	l, err := pr.out.next(d)
	if err != nil {
		pr.t.Fatalf("%s (cpid %s): no line of output: %v", pr.name, pr.cpid, err)
	}
	return strings.TrimSuffix(l, "\n")
}

// ask sends a line to the program and returns its answer.
func (pr *program) ask(s string) string {
	pr.t.Helper()
	if _, err := io.WriteString(pr.in, s+"\n"); err != nil {
		pr.t.Fatalf("%s: writing to its stdin: %v", pr.name, err)
	}
	return pr.line(time.Minute)
}

// end closes its stdin and returns the rest of its output and its exit
// code, as ssi run reports it.
func (pr *program) end(d time.Duration) (string, int) {
	pr.t.Helper()
	pr.in.Close()
	rest, err := pr.out.rest(d)
	if err != nil {
		pr.t.Fatalf("%s: waiting for its output to end: %v (so far %q)", pr.name, err, rest)
	}
	err = waitFor(pr.cmd, d)
	pr.ended = true
	var ee *exec.ExitError
	switch {
	case err == nil:
		return rest, 0
	case errors.As(err, &ee):
		return rest, ee.ExitCode()
	}
	pr.t.Fatalf("%s: ssi run did not end: %v", pr.name, err)
	return rest, -1
}

// restartAgent restarts node's agent alone with env added (what runs in
// the node goes on) and waits until the cluster agrees again.
func (p *progLab) restartAgent(t *testing.T, node string, env ...string) {
	t.Helper()
	// killAgent returns once the agent's last thread is gone.
	p.killAgent(t, node)
	if r := ssi(t, append(append([]string{}, p.env...), env...), p.args("start", node)...); r.code != 0 {
		t.Fatalf("lab start %s %v: %s", node, env, r.err)
	}
	p.clusterLab.with(t).agree("node2", three, 30*time.Second)
}

// readOr is the file's content, or "" if it cannot be read.
func readOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// homeFile reads a file of the test user's directory on node.
func (p *progLab) homeFile(node, rel string) string {
	return p.ssi("exec", node, "--", "cat", filepath.Join(progHome, rel)).out
}

// TestPrograms: real programs nobody here wrote, run and moved by a
// normal user on a 3-node lab.
func TestPrograms(t *testing.T) {
	c := newClusterLab(t, "itprog", "10.213.72.0/24", "--nodes", "3")
	ns := c.agree("node1", three, 10*time.Second)
	p := &progLab{migLab: &migLab{clusterLab: c}, addrs: map[string]string{}}
	for _, n := range ns {
		p.addrs[n.Name], _, _ = strings.Cut(n.Addr, ":")
	}
	// The user's directory, made by root, then theirs; every program
	// and its files live there.
	src := t.TempDir()
	sum := writeCTree(t, filepath.Join(src, "make"), 100, 80)
	for name, body := range map[string]string{
		"proc/self.py": procPy, "sqlite/writer.py": sqlitePy, "sqlite/check.py": sqliteCheckPy,
		"fail/writer.py": sqlitePy, "fail/check.py": sqliteCheckPy,
		"fail/counter.sh": "i=0\nwhile :; do i=$((i+1)); echo $i >> " + progHome + "/fail/count.txt; sleep 0.1; done\n",
		"java/Prog.java":  progJava, "node/server.js": serverJS,
		"watch/watch.py": watchPy, "watch/dir/.keep": "", "deleted/deleted.py": deletedPy,
		"kernel/kernel.py": kernelPy,
	} {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(src, 0o755); err != nil {
		t.Fatal(err)
	}
	c.within(2*time.Minute).must("exec", "node1", "--", "sh", "-c",
		"mkdir -p "+progHome+" && cp -R "+src+"/. "+progHome+"/ && chown -R "+progUID+":"+progUID+" "+progHome)

	t.Run("python reads its own /proc", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		// A file in the node's /tmp: the job's /tmp is its own.
		const nodeTmp = "/tmp/ssi-itprog-node-file"
		p.must("exec", "node1", "--", "touch", nodeTmp)
		defer os.Remove(nodeTmp)
		pr := p.start(t, progHome+"/proc", "self.py", "python3", "self.py", nodeTmp)
		pid := ""
		check := func(when string) {
			t.Helper()
			f := strings.Fields(pr.ask("check"))
			if len(f) != 8 {
				t.Fatalf("%s: answer %q", when, f)
			}
			// job-init was root to mount the job's file systems: neither it
			// nor the program keeps anything of root.
			if want := progUID + "/0000000000000000/" + progUID + "/0000000000000000"; f[6] != want {
				t.Fatalf("%s: uid/CapEff of the program and of its init: %s, want %s", when, f[6], want)
			}
			if f[7] != "False" {
				t.Fatalf("%s: the job sees the node's %s", when, nodeTmp)
			}
			if pid == "" {
				pid = f[0]
			}
			if f[0] != pid || f[1] != "python3" || f[2] != pid || f[3] != pid || f[4] != "(python3)" {
				t.Fatalf("%s: getpid %s (%s before), /proc/<getpid()>/status Name %q Pid %s, /proc/self/stat pid %s comm %s: "+
					"not its own entries", when, f[0], pid, f[1], f[2], f[3], f[4])
			}
			// ps -e inside the job: the job's init (pid 1), python and ps.
			ps := strings.Split(f[5], ",")
			if len(ps)%2 != 0 {
				t.Fatalf("%s: ps -e lists %q", when, f[5])
			}
			procs := map[string]string{}
			others := 0
			for i := 0; i < len(ps); i += 2 {
				if ps[i+1] == "ps" {
					continue
				}
				procs[ps[i]] = ps[i+1]
				others++
			}
			if others != 2 || procs["1"] != filepath.Base(ssiBin) || procs[pid] != "python3" {
				t.Fatalf("%s: ps -e inside the job lists %q, want only its init (1 %s), python3 (%s) and ps",
					when, f[5], filepath.Base(ssiBin), pid)
			}
		}
		check("on node1")
		p.move("where", "node3", pr.cpid, "node2")
		check("after its move to node2")
		p.move("migrate", "node1", pr.cpid, "node3")
		check("after its move to node3")
		if rest, code := pr.end(time.Minute); code != 0 || rest != "" {
			t.Fatalf("it ended with exit %d and output %q", code, rest)
		}
	})

	t.Run("make -j2 builds while it moves", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		dir := progHome + "/make"
		objects := func() int {
			r := p.ssi("exec", "node1", "--", "sh", "-c", "ls "+dir+" | grep -c '\\.o$'")
			n, _ := strconv.Atoi(strings.TrimSpace(r.out))
			return n
		}
		waitObjects := func(n int) int {
			t.Helper()
			var got int
			eventually(t, fmt.Sprintf("more than %d object files", n), time.Minute, func() bool {
				got = objects()
				return got > n
			})
			return got
		}
		pr := p.start(t, dir, "make", "make", "-j2", "-s")
		first := waitObjects(5)
		p.move("where", "node3", pr.cpid, "node2")
		second := waitObjects(first + 5)
		// Still building: else the move would find no process.
		p.move("migrate", "node1", pr.cpid, "node3")
		t.Logf("moved when %d and %d of 101 objects were built", first, second)
		if rest, code := pr.end(2 * time.Minute); code != 0 {
			t.Fatalf("make exited %d: %s", code, rest)
		}
		if out := p.mustUser("node2", dir, "./sum"); out != fmt.Sprintf("sum %d\n", sum) {
			t.Fatalf("the binary make built prints %q, want \"sum %d\"", out, sum)
		}
	})

	t.Run("a sqlite writer holding its lock moves", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		dir := progHome + "/sqlite"
		pr := p.start(t, dir, "writer.py", "python3", "writer.py", dir+"/rows.db", "3000")
		upTo := func(n int) {
			t.Helper()
			for {
				l := pr.line(time.Minute)
				v, err := strconv.Atoi(l)
				if err != nil {
					t.Fatalf("the writer printed %q", l)
				}
				if v >= n {
					return
				}
			}
		}
		// Locks exclude processes of one node: a reader where the writer
		// runs finds the database locked, so the lock moved with it.
		locked := func(node string) {
			t.Helper()
			if got := strings.TrimSpace(p.mustUser(node, dir, "python3", "check.py", dir+"/rows.db")); got != "locked" {
				t.Fatalf("a reader on %s, where the writer runs, gets %q: the writer's lock is not held there", node, got)
			}
		}
		upTo(300)
		locked("node1")
		p.move("where", "node1", pr.cpid, "node2")
		locked("node2")
		upTo(900)
		p.move("migrate", "node3", pr.cpid, "node3")
		locked("node3")
		rest, code := pr.end(2 * time.Minute)
		if code != 0 || !strings.HasSuffix(rest, "done\n") {
			t.Fatalf("the writer ended with exit %d, output %q", code, rest)
		}
		if got := strings.TrimSpace(p.mustUser("node1", dir, "python3", "check.py", dir+"/rows.db")); got != "3000 1 3000 ok" {
			t.Fatalf("the database holds (count, min, max, integrity_check) %q, want \"3000 1 3000 ok\"", got)
		}
	})

	t.Run("java threads compute while they move", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		const rounds, n = 40, 5000000
		want := make(chan []int64, 1)
		go func() {
			sums := make([]int64, rounds+1)
			for r := int64(1); r <= rounds; r++ {
				sums[r] = javaRound(r, n)
				sums[0] += sums[r]
			}
			want <- sums
		}()
		pr := p.start(t, progHome+"/java", "Prog.java", "java", "Prog.java", "4", strconv.Itoa(rounds), strconv.Itoa(n))
		var got []string
		next := func() {
			t.Helper()
			got = append(got, pr.line(2*time.Minute))
		}
		next()
		next()
		p.move("where", "node2", pr.cpid, "node2")
		next()
		p.move("migrate", "node1", pr.cpid, "node3")
		rest, code := pr.end(2 * time.Minute)
		got = append(got, strings.Split(strings.TrimSuffix(rest, "\n"), "\n")...)
		if code != 0 {
			t.Fatalf("java exited %d: %q", code, got)
		}
		sums := <-want
		if len(got) != rounds+1 || got[rounds] != fmt.Sprintf("total %d", sums[0]) {
			t.Fatalf("java printed %d lines ending %q, want %d rounds and \"total %d\"", len(got), got[len(got)-1], rounds, sums[0])
		}
		for r := 1; r <= rounds; r++ {
			if w := fmt.Sprintf("round %d %d", r, sums[r]); got[r-1] != w {
				t.Fatalf("line %d: %q, want %q", r, got[r-1], w)
			}
		}
	})

	t.Run("node serves http at its new address", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		pr := p.start(t, progHome+"/node", "server.js", "node", "server.js")
		port, ok := strings.CutPrefix(pr.line(time.Minute), "port ")
		if !ok {
			t.Fatalf("node printed no port")
		}
		// Its timer prints "tick 20", "tick 40"...: each line read is the
		// next, so the timer runs, in order, wherever it is.
		ticks := 0
		tick := func(where string) {
			t.Helper()
			ticks += 20
			if l := pr.line(time.Minute); l != fmt.Sprintf("tick %d", ticks) {
				t.Fatalf("%s: the timer printed %q, want \"tick %d\"", where, l, ticks)
			}
		}
		reqs := 0
		get := func(from, at, path string) string {
			t.Helper()
			reqs++
			url := "http://" + p.addrs[at] + ":" + port + path
			r := p.ssi("exec", from, "--", "curl", "-sS", "--max-time", "10", url)
			if r.code != 0 {
				t.Fatalf("curl %s from %s (the server runs on %s): exit %d %s", url, from, at, r.code, r.err)
			}
			return strings.TrimSpace(r.out)
		}
		tick("on node1")
		if got := get("node2", "node1", "/"); got != "hello 1" {
			t.Fatalf("the server on node1 answers %q", got)
		}
		p.move("where", "node3", pr.cpid, "node2")
		tick("on node2")
		if got := get("node3", "node2", "/"); got != "hello 2" {
			t.Fatalf("after its move the server answers at node2's address %q", got)
		}
		p.move("migrate", "node1", pr.cpid, "node3")
		tick("on node3")
		if got := get("node1", "node3", "/"); got != "hello 3" {
			t.Fatalf("after its move the server answers at node3's address %q", got)
		}
		at := p.where("node1", pr.cpid)
		if got := get("node2", at, "/quit"); got != fmt.Sprintf("bye %d", reqs) {
			t.Fatalf("/quit: %q", got)
		}
		rest, code := pr.end(time.Minute)
		lines := strings.Split(strings.TrimSuffix(rest, "\n"), "\n")
		if code != 0 || lines[len(lines)-1] != fmt.Sprintf("done %d", reqs) {
			t.Fatalf("node ended with exit %d, output %q", code, rest)
		}
		for _, l := range lines[:len(lines)-1] {
			if ticks += 20; l != fmt.Sprintf("tick %d", ticks) {
				t.Fatalf("the timer printed %q, want \"tick %d\"", l, ticks)
			}
		}
	})

	t.Run("an inotify watch and a fifo pair move", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		dir := progHome + "/watch"
		pr := p.start(t, dir, "watch.py", "python3", "watch.py", dir+"/dir")
		if l := pr.line(time.Minute); l != "ready" {
			t.Fatalf("the watcher printed %q", l)
		}
		got := 0
		flows := func(when string) {
			t.Helper()
			var n int
			var order string
			eventually(t, "numbers to come through the fifo "+when, 20*time.Second, func() bool {
				l := pr.ask("check")
				if _, err := fmt.Sscanf(l, "fifo %d in %s", &n, &order); err != nil || order != "order" {
					t.Fatalf("%s: the fifo reader says %q", when, l)
				}
				return n > got
			})
			got = n
		}
		// inotify reports what this node's kernel sees: files written
		// where the watcher runs.
		event := func(node, name string) {
			t.Helper()
			p.mustUser(node, dir, "sh", "-c", "echo x > dir/"+name)
			if l := pr.line(20 * time.Second); l != "event "+name {
				t.Fatalf("after writing dir/%s on %s the watcher printed %q", name, node, l)
			}
		}
		event("node1", "a1")
		flows("on node1")
		p.move("where", "node2", pr.cpid, "node2")
		event("node2", "a2")
		flows("after its move to node2")
		p.move("migrate", "node1", pr.cpid, "node3")
		event("node3", "a3")
		flows("after its move to node3")
		if rest, code := pr.end(time.Minute); code != 0 || rest != "" {
			t.Fatalf("the watcher ended with exit %d, output %q", code, rest)
		}
	})

	t.Run("a deleted open file moves", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		pr := p.start(t, progHome+"/deleted", "deleted.py", "python3", "deleted.py")
		if l := pr.line(time.Minute); l != "ready" {
			t.Fatalf("it printed %q", l)
		}
		for _, hop := range []struct{ how, from, to string }{{"where", "node3", "node2"}, {"migrate", "node1", "node3"}} {
			p.move(hop.how, hop.from, pr.cpid, hop.to)
			if l := pr.ask("check"); l != "intact gone" {
				t.Fatalf("on %s its deleted file is %q", hop.to, l)
			}
		}
		if rest, code := pr.end(time.Minute); code != 0 || rest != "" {
			t.Fatalf("it ended with exit %d, output %q", code, rest)
		}
	})

	t.Run("eventfd, timerfd, signalfd, a POSIX timer, sockets, SysV shm and a thread move", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		pr := p.start(t, progHome+"/kernel", "kernel.py", "python3", "kernel.py")
		if l := pr.line(time.Minute); l != "ready" {
			t.Fatalf("it printed %q", l)
		}
		if l := pr.ask("check"); l != "ok 1" {
			t.Fatalf("before the moves: %q", l)
		}
		for i, hop := range []struct{ how, from, to string }{{"where", "node3", "node2"}, {"migrate", "node1", "node3"}} {
			p.move(hop.how, hop.from, pr.cpid, hop.to)
			if l := pr.ask("check"); l != fmt.Sprintf("ok %d", i+2) {
				t.Fatalf("on %s: %q", hop.to, l)
			}
		}
		if rest, code := pr.end(time.Minute); code != 0 || rest != "" {
			t.Fatalf("it ended with exit %d, output %q", code, rest)
		}
	})

	// Last: it restarts node1's agent, twice with failing dumps.
	t.Run("a failed dump harms nothing", func(t *testing.T) {
		p := &progLab{migLab: &migLab{clusterLab: c.with(t)}, addrs: p.addrs}
		dir := progHome + "/fail"
		// The programs start after each restart: a program holding a file
		// of /cluster/home open does not survive its agent's restart.
		for i, mode := range []string{"criu", "after"} {
			p.restartAgent(t, "node1", "SSI_FAIL_DUMP="+mode)
			db, progress := fmt.Sprintf("%s/rows%d.db", dir, i), fmt.Sprintf("progress%d.txt", i)
			counter := strings.TrimSpace(p.mustUser("node1", dir, ssiBin, "run", "-d", "--", "bash", "counter.sh"))
			writer := strings.TrimSpace(p.mustUser("node1", dir, ssiBin, "run", "-d", "--", "python3", "writer.py", db, "3000", dir+"/"+progress))
			n := p.waitGrows(t, "node1", "itprog/fail/count.txt", 3)
			eventually(t, "the writer to write 200 rows", time.Minute, func() bool {
				return strings.Contains(p.homeFile("node1", "fail/"+progress), "200\n")
			})
			want := map[string]string{"criu": "checkpoint failed", "after": "SSI_FAIL_DUMP=after"}[mode]
			for _, cpid := range []string{counter, writer} {
				if e := p.writeWhere("node2", cpid, "node2"); e != 95 {
					t.Fatalf("SSI_FAIL_DUMP=%s: moving %s: errno %d, want 95 (EOPNOTSUPP)", mode, cpid, e)
				}
				// The move has returned: cantmove reflects it on every node.
				if cm := p.cantmove("node3", cpid); !strings.Contains(cm, want) {
					t.Errorf("SSI_FAIL_DUMP=%s: right after the failed move, cantmove of %s on node3 reads %q, want the reason (%q)",
						mode, cpid, cm, want)
					eventually(t, "cantmove to say why", 10*time.Second, func() bool { return strings.Contains(p.cantmove("node3", cpid), want) })
				}
				if cm := p.cantmove("node3", cpid); strings.Contains(cm, "\n") {
					t.Errorf("SSI_FAIL_DUMP=%s: cantmove of %s is not one line:\n%s", mode, cpid, cm)
				}
				if got := p.where("node3", cpid); got != "node1" {
					t.Fatalf("after a failed move %s is on %q", cpid, got)
				}
			}
			if got := strings.TrimSpace(p.mustUser("node1", dir, "python3", "check.py", db)); got != "locked" {
				t.Fatalf("after the failed move a reader on node1 gets %q: the writer lost its lock", got)
			}
			// The counter goes on, 1..n in order (waitGrows checks).
			p.waitGrows(t, "node1", "itprog/fail/count.txt", n+5)
			if r := p.within(2 * time.Minute).ssi(append([]string{"exec", "node1", "--"}, progArgv(dir, ssiBin, "wait", writer)...)...); r.code != 0 {
				t.Fatalf("SSI_FAIL_DUMP=%s: the writer ended with exit %d (%s); its progress: %q", mode, r.code, r.err,
					p.homeFile("node1", "fail/"+progress))
			}
			if got := strings.TrimSpace(p.mustUser("node2", dir, "python3", "check.py", db)); got != "3000 1 3000 ok" {
				t.Fatalf("SSI_FAIL_DUMP=%s: the database holds (count, min, max, integrity_check) %q, want \"3000 1 3000 ok\"", mode, got)
			}
			p.mustUser("node1", dir, ssiBin, "kill", counter)
			if r := p.user("node1", dir, ssiBin, "wait", counter); r.code != 128+15 {
				t.Fatalf("the counter ended with exit %d (%s)", r.code, r.err)
			}
			if _, ok := countsInOrder(p.homeFile("node1", "fail/count.txt")); !ok {
				t.Fatalf("the counter's file is not 1..n in order")
			}
			p.mustUser("node1", dir, "rm", "count.txt")
		}
		p.restartAgent(t, "node1")
	})
}

// writeCTree writes n C files, a main.c summing what each returns, and a
// Makefile; each file has funcs functions, so that gcc takes a while. It
// returns what the binary prints after "sum ".
func writeCTree(t *testing.T, dir string, n, funcs int) int {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sum := 0
	var objs, decls, calls strings.Builder
	for i := 0; i < n; i++ {
		var b strings.Builder
		for k := 0; k < funcs; k++ {
			fmt.Fprintf(&b, "static int g%d(int x) { int s = 0; for (int j = 0; j < x; j++) s += (j * %d + %d) %% 7; return s; }\n", k, k+1, i)
		}
		fmt.Fprintf(&b, "int f%03d(void) { int s = 0;\n", i)
		for k := 0; k < funcs; k++ {
			fmt.Fprintf(&b, "s += g%d(0);\n", k)
		}
		fmt.Fprintf(&b, "return s + %d; }\n", i*3+1)
		sum += i*3 + 1
		write(fmt.Sprintf("f%03d.c", i), b.String())
		fmt.Fprintf(&objs, " f%03d.o", i)
		fmt.Fprintf(&decls, "int f%03d(void);\n", i)
		fmt.Fprintf(&calls, "s += f%03d();\n", i)
	}
	write("main.c", "#include <stdio.h>\n"+decls.String()+"int main(void) { long s = 0;\n"+calls.String()+
		"printf(\"sum %ld\\n\", s); return 0; }\n")
	write("Makefile", "OBJS ="+objs.String()+" main.o\nsum: $(OBJS)\n\tgcc -o $@ $(OBJS)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\n")
	return sum
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
