package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
