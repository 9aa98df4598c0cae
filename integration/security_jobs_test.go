package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSecurityJobs: a job runs as its caller really is (resource limits,
// umask, oom_score_adj, supplementary groups), before and after a move;
// an argv over 128 KiB is E2BIG and nothing is stored; a user past
// jobs.max_per_user gets EAGAIN, and root does not.
func TestSecurityJobs(t *testing.T) {
	// The agents inherit the lab's environment: two processes per user.
	t.Setenv("SSI_JOBS_MAX_PER_USER", "2")
	c := newClusterLab(t, "itsecjob", "10.213.86.0/24", "--nodes", "2")
	c.agree("node1", []string{"node1", "node2"}, 30*time.Second)
	m := &migLab{clusterLab: c, dir: t.TempDir()}
	openToAll(t, m.dir)
	// The user's jobs report into a directory of the user's, on the
	// host's file system, which every node sees.
	out := filepath.Join(m.dir, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(out, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	// Every 100 ms: a count, then the soft/hard file limit, umask,
	// oom_score_adj and groups that a child of the job has, into a file
	// the job creates each time (its mode shows the umask at work).
	report := m.script(t, "report.sh", `out=$1; i=0
while :; do
	i=$((i+1))
	l=$(awk '/^Max open files/ {print $4 "/" $5}' /proc/self/limits)
	u=$(awk '/^Umask:/ {print $2}' /proc/self/status)
	g=$(awk '/^Groups:/ {$1 = ""; print}' /proc/self/status)
	echo "$i $l $u $(cat /proc/self/oom_score_adj) groups$g" > "$out.new" && mv -f "$out.new" "$out"
	sleep 0.1
done
`)
	u := asUser{1000, "-uid1000"}
	var cpid string
	t.Run("limits umask and oom_score_adj before and after a move", func(t *testing.T) {
		cpid = testJobKeepsCaller(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u, report, filepath.Join(out, "a"))
	})
	t.Run("argv over 128 KiB is E2BIG", func(t *testing.T) {
		testArgvTooBig(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u)
	})
	t.Run("per-user job limit", func(t *testing.T) {
		testPerUserLimit(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u, report, filepath.Join(out, "b"))
	})
	if cpid != "" {
		c.ssi("exec", "node1", "--", ssiBin, "kill", "-s", "KILL", cpid)
	}
}

// jobReport is one line of report.sh.
type jobReport struct {
	n             int
	nofile, umask string
	oom, groups   string
	mode          os.FileMode
	uid           int
	line          string
}

// readReport reads the last report in file; ok is false until there is
// one.
func readReport(file string) (jobReport, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return jobReport{}, false
	}
	f := strings.Fields(string(b))
	if len(f) < 5 || !strings.HasPrefix(f[4], "groups") {
		return jobReport{line: string(b)}, false
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return jobReport{line: string(b)}, false
	}
	r := jobReport{n: n, nofile: f[1], umask: f[2], oom: f[3], groups: strings.Join(f[5:], " "), line: string(b)}
	if fi, err := os.Stat(file); err == nil {
		r.mode = fi.Mode().Perm()
		r.uid = fileUID(fi)
	}
	return r, true
}

// fileUID is the owner of a file.
func fileUID(fi os.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// waitReport waits for a report numbered above after and returns it.
func waitReport(t *testing.T, file string, after int) jobReport {
	t.Helper()
	var r jobReport
	eventually(t, fmt.Sprintf("a report after %d in %s", after, file), 20*time.Second, func() bool {
		var ok bool
		r, ok = readReport(file)
		return ok && r.n > after
	})
	return r
}

// testJobKeepsCaller: uid 1000 starts a job from a shell with `ulimit -n
// 64`, umask 077 and oom_score_adj 500; the job has them all, on node1
// and after a move to node2. The process's cpid is returned.
func testJobKeepsCaller(t *testing.T, m *migLab, u asUser, report, file string) string {
	out := m.must(u.cmd("node1", "sh", "-c", `ulimit -n 64 && umask 077 && echo 500 > /proc/self/oom_score_adj && exec "$0" run -d -- "$@"`,
		ssiBin, report, file)...)
	cpid := strings.TrimSpace(out)
	if _, err := strconv.Atoi(cpid); err != nil {
		t.Fatalf("ssi run -d printed %q", out)
	}
	check := func(when string, r jobReport) {
		t.Helper()
		if r.nofile != "64/64" || r.umask != "0077" || r.oom != "500" || r.groups != "" || r.mode != 0o600 || r.uid != 1000 {
			t.Fatalf("%s: the job reports %q (file mode %#o, uid %d); want 64/64 0077 500, no groups, a 0600 file of uid 1000",
				when, r.line, r.mode, r.uid)
		}
	}
	before := waitReport(t, file, 0)
	check("on node1", before)
	t.Logf("on node1: %s", strings.TrimSpace(before.line))
	m.must(u.cmd("node1", ssiBin, "migrate", cpid, "node2")...)
	if got := m.where("node2", cpid); got != "node2" {
		t.Fatalf("after the move, where reads %q", got)
	}
	// Reports written after the move returned come from node2.
	moved, _ := readReport(file)
	after := waitReport(t, file, moved.n+2)
	check("on node2", after)
	t.Logf("on node2: %s", strings.TrimSpace(after.line))
	return cpid
}

// procsOf is how many cluster processes uid has, as ssi ps lists them.
func procsOf(t *testing.T, m *migLab, uid int) int {
	t.Helper()
	var ps []struct {
		UID int `json:"uid"`
	}
	r := m.ssi("exec", "node1", "--", ssiBin, "ps", "--json")
	if r.code != 0 || json.Unmarshal([]byte(r.out), &ps) != nil {
		t.Fatalf("ssi ps --json: exit %d: %s%s", r.code, r.out, r.err)
	}
	n := 0
	for _, p := range ps {
		if p.UID == uid {
			n++
		}
	}
	return n
}

// testArgvTooBig: 150 KiB of argv fails with E2BIG, and the cluster
// lists no new process; the same command with a short argv runs.
func testArgvTooBig(t *testing.T, m *migLab, u asUser) {
	had := procsOf(t, m, u.uid)
	big := strings.Repeat("x", 50<<10)
	r := m.ssi(u.cmd("node1", ssiBin, "run", "-d", "--", "echo", big, big, big)...)
	if r.code == 0 || !strings.Contains(r.err, "E2BIG") || !strings.Contains(r.err, "131072") {
		t.Fatalf("ssi run with 150 KiB of argv: exit %d, stderr %q; want a failure naming E2BIG and the limit", r.code, r.err)
	}
	t.Logf("ssi run: %s", strings.TrimSpace(r.err))
	if n := procsOf(t, m, u.uid); n != had {
		t.Fatalf("uid %d has %d processes after the refused run, had %d", u.uid, n, had)
	}
}

// testPerUserLimit: uid 1000 has one process (on node2); a second one,
// started with only a soft file limit and two supplementary groups,
// runs with them; a third is refused with EAGAIN on node1, counting
// the one on node2; root is not limited; once one of the user's ends, a
// new one starts.
func testPerUserLimit(t *testing.T, m *migLab, u asUser, report, file string) {
	if n := procsOf(t, m, u.uid); n != 1 {
		t.Fatalf("uid 1000 has %d processes, want the one on node2", n)
	}
	out := m.must("exec", "node1", "--", "setpriv", "--reuid", "1000", "--regid", "1000", "--groups", "1000,100",
		"env", "PATH=/usr/bin:/bin", "sh", "-c", `ulimit -Sn 50 && exec "$0" run -d -- "$@"`, ssiBin, report, file)
	second := strings.TrimSpace(out)
	r := waitReport(t, file, 0)
	soft, hard, _ := strings.Cut(r.nofile, "/")
	if soft != "50" || hard == "50" || r.groups != "100 1000" {
		t.Fatalf("the second job reports %q; want a soft file limit of 50 under the caller's hard one, and groups 100 1000", r.line)
	}
	sleep := u.cmd("node1", ssiBin, "run", "-d", "--", "sleep", "1000")
	third := m.ssi(sleep...)
	if third.code == 0 || !strings.Contains(third.err, "EAGAIN") || !strings.Contains(third.err, "jobs.max_per_user") {
		t.Fatalf("the third process of uid 1000: exit %d, stdout %q, stderr %q; want EAGAIN naming jobs.max_per_user",
			third.code, third.out, third.err)
	}
	t.Logf("ssi run: %s", strings.TrimSpace(third.err))
	if n := procsOf(t, m, u.uid); n != 2 {
		t.Fatalf("uid 1000 has %d processes after the refusal, want 2", n)
	}
	var roots []string
	for i := 0; i < 3; i++ {
		roots = append(roots, strings.TrimSpace(m.must("exec", "node1", "--", ssiBin, "run", "-d", "--", "sleep", "1000")))
	}
	for _, cpid := range roots {
		m.must("exec", "node1", "--", ssiBin, "kill", "-s", "KILL", cpid)
	}
	m.must(u.cmd("node1", ssiBin, "kill", "-s", "KILL", second)...)
	if w := m.ssi(u.cmd("node1", ssiBin, "wait", second)...); w.code != 128+9 {
		t.Fatalf("ssi wait after kill -9: exit %d (%s)", w.code, w.err)
	}
	again := strings.TrimSpace(m.must(sleep...))
	m.must(u.cmd("node1", ssiBin, "kill", "-s", "KILL", again)...)
}
