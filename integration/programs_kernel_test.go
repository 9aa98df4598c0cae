package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// testProgramsWatch: an inotify watch and a fifo pair move.
func testProgramsWatch(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}

// testProgramsDeleted: a deleted file held open moves intact.
func testProgramsDeleted(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}

// testProgramsKernel: kernel objects besides files move and work.
func testProgramsKernel(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
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
}

// testProgramsFailedDump: a move whose dump fails, in CRIU or after it,
// is refused and harms neither the process nor its files.
func testProgramsFailedDump(t *testing.T, lab *progLab) {
	p := &progLab{migLab: &migLab{clusterLab: lab.with(t)}, addrs: lab.addrs}
	dir := progHome + "/fail"
	// The programs start after each restart: a program holding a file
	// of /cluster/home open does not survive its agent's restart.
	for i, mode := range []string{"criu", "after"} {
		failedDumpRound(t, p, dir, i, mode)
	}
	p.restartAgent(t, "node1")
}

// failedDumpRound is one restart of node1's agent with SSI_FAIL_DUMP=mode
// and a failed move of a counter and of a sqlite writer.
func failedDumpRound(t *testing.T, p *progLab, dir string, i int, mode string) {
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
