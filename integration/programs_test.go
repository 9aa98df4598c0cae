package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

// TestPrograms: real programs nobody here wrote, run and moved by a
// normal user on a 3-node lab.
func TestPrograms(t *testing.T) {
	c := newClusterLab(t, "itprog", "10.213.72.0/24", "--nodes", "3")
	ns := c.agree("node1", three, 10*time.Second)
	p := &progLab{migLab: &migLab{clusterLab: c}, addrs: map[string]string{}}
	for _, n := range ns {
		p.addrs[n.Name], _, _ = strings.Cut(n.Addr, ":")
	}
	sum := installPrograms(t, c)

	t.Run("python reads its own /proc", func(t *testing.T) { testProgramsProc(t, p) })
	t.Run("make -j2 builds while it moves", func(t *testing.T) { testProgramsMake(t, p, sum) })
	t.Run("a sqlite writer holding its lock moves", func(t *testing.T) { testProgramsSqlite(t, p) })
	t.Run("java threads compute while they move", func(t *testing.T) { testProgramsJava(t, p) })
	t.Run("node serves http at its new address", func(t *testing.T) { testProgramsNode(t, p) })
	t.Run("an inotify watch and a fifo pair move", func(t *testing.T) { testProgramsWatch(t, p) })
	t.Run("a deleted open file moves", func(t *testing.T) { testProgramsDeleted(t, p) })
	t.Run("eventfd, timerfd, signalfd, a POSIX timer, sockets, SysV shm and a thread move", func(t *testing.T) { testProgramsKernel(t, p) })
	// Last: it restarts node1's agent, twice with failing dumps.
	t.Run("a failed dump harms nothing", func(t *testing.T) { testProgramsFailedDump(t, p) })
}

// installPrograms puts the programs and their files in the test user's
// directory, and returns what the C tree's binary must print after "sum ".
func installPrograms(t *testing.T, c *clusterLab) int {
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
	return sum
}

// testProgramsProc: python reads its own entries in /proc, and sees
// only its job, on every node.
func testProgramsProc(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
	// A file in the node's /tmp: the job's /tmp is its own.
	const nodeTmp = "/tmp/ssi-itprog-node-file"
	p.must("exec", "node1", "--", "touch", nodeTmp)
	defer os.Remove(nodeTmp)
	pr := p.start(t, progHome+"/proc", "self.py", "python3", "self.py", nodeTmp)
	pid := ""
	check := func(when string) {
		t.Helper()
		pid = checkProcSelf(t, pr, nodeTmp, pid, when)
	}
	check("on node1")
	p.move("where", "node3", pr.cpid, "node2")
	check("after its move to node2")
	p.move("migrate", "node1", pr.cpid, "node3")
	check("after its move to node3")
	if rest, code := pr.end(time.Minute); code != 0 || rest != "" {
		t.Fatalf("it ended with exit %d and output %q", code, rest)
	}
}

// checkProcSelf asks self.py what it reads of itself and fails the test
// unless it is its own pid (pid, or the first answer's if pid is ""),
// no root, the job's own /tmp and only its job in ps; it returns pid.
func checkProcSelf(t *testing.T, pr *program, nodeTmp, pid, when string) string {
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
	return pid
}

// testProgramsMake: make -j2 builds a C tree while it moves.
func testProgramsMake(t *testing.T, lab *progLab, sum int) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}

// testProgramsSqlite: a sqlite writer moves with its database's lock.
func testProgramsSqlite(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}

// testProgramsJava: a JVM's thread pool computes on while it moves.
func testProgramsJava(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}

// testProgramsNode: a node.js server answers at each node's address
// in turn, and its timer ticks on.
func testProgramsNode(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}
