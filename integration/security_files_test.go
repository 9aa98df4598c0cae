package integration

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSecurityControlFiles: /cluster's control files belong to the
// process's owner (admin to root), mode 0644, and the kernel refuses
// another user's open for writing; with fs.hide_other_users, a user sees
// and reaches only their own processes, in /cluster/proc and `ssi ps`.
// Throughout, the owner moves its own process by writing where.
func TestSecurityControlFiles(t *testing.T) {
	c := newClusterLab(t, "itsecfil", "10.213.87.0/24", "--nodes", "2")
	c.agree("node1", []string{"node1", "node2"}, 10*time.Second)
	m := &migLab{clusterLab: c, dir: t.TempDir()}
	s := &secFiles{migLab: m, user: asUser{uid: 1000, suffix: "-uid1000"}}
	s.root = m.runDetached(t, "node1", "sleep", "1000")
	s.mine = m.runDetachedAs(t, s.user, "node1", "sleep", "1000")
	s.owners(t)
	s.openRefused(t)
	s.hidden(t)
}

// secFiles is the lab of TestSecurityControlFiles: a process of root's
// and one of uid 1000's, both started on node1.
type secFiles struct {
	*migLab
	user       asUser
	root, mine string // cpids
}

// as runs a shell script as uid 1000 on node.
func (s *secFiles) as(node, script string) result {
	return s.ssi(s.user.cmd(node, "bash", "-c", script)...)
}

// move has uid 1000 move its own process to target by writing where on
// node, and checks that it runs on want.
func (s *secFiles) move(t *testing.T, node, target, want string) {
	t.Helper()
	if r := s.as(node, "echo "+target+" > /cluster/proc/"+s.mine+"/where"); r.code != 0 {
		t.Fatalf("uid 1000 moving its own process to %s from %s: %d %q", target, node, r.code, r.err)
	}
	if got := s.where("node1", s.mine); got != want {
		t.Fatalf("after the move to %s it is on %q", target, got)
	}
}

// owners: the files' owners and modes, as another node shows them.
func (s *secFiles) owners(t *testing.T) {
	for _, f := range []struct{ path, want string }{
		{"/cluster/proc/" + s.mine + "/where", "644 1000 1000"},
		{"/cluster/proc/" + s.mine + "/lock", "644 1000 1000"},
		{"/cluster/proc/" + s.root + "/where", "644 0 0"},
		{"/cluster/admin/block", "644 0 0"},
	} {
		if got := strings.TrimSpace(s.must("exec", "node2", "--", "stat", "-c", "%a %u %g", f.path)); got != f.want {
			t.Fatalf("%s: %q, want %q", f.path, got, f.want)
		}
	}
}

// openRefused: uid 1000's own process moves; root's where and lock are
// refused at open, before a byte is written.
func (s *secFiles) openRefused(t *testing.T) {
	s.move(t, "node2", "node2", "node2")
	for _, f := range []string{"where", "lock"} {
		r := s.as("node2", "exec 3>/cluster/proc/"+s.root+"/"+f+" && echo opened")
		if r.code == 0 || strings.Contains(r.out, "opened") || !strings.Contains(r.err, "Permission denied") {
			t.Fatalf("uid 1000 opening root's %s for writing: %d %q %q", f, r.code, r.out, r.err)
		}
	}
	if got := s.where("node2", s.root); got != "node1" {
		t.Fatalf("root's process is on %q", got)
	}
	s.move(t, "node2", "home", "node1")
}

// hidden: node2's agent, restarted hiding other users' processes (it
// reads the environment it starts with), shows uid 1000 its own process
// alone; root sees both; node1, not hiding, shows both to everyone.
func (s *secFiles) hidden(t *testing.T) {
	s.must("kill", "node2") // nothing of ours runs there now
	hiding := *s.clusterLab
	hiding.env = append(slices.Clone(s.env), "SSI_FS_HIDE_OTHER_USERS=true")
	hiding.must("start", "node2")
	s.agree("node2", []string{"node1", "node2"}, 20*time.Second)
	both := sorted(s.root, s.mine)
	eventually(t, "node2 to list both processes to root", 10*time.Second, func() bool {
		return slices.Equal(sorted(strings.Fields(s.ssi("exec", "node2", "--", "ls", "/cluster/proc").out)...), both)
	})
	if r := s.as("node2", "ls /cluster/proc"); r.code != 0 || r.out != s.mine+"\n" {
		t.Fatalf("uid 1000 lists %q (%q)", r.out, r.err)
	}
	for _, script := range []string{"cat /cluster/proc/" + s.root + "/cmdline", "echo node2 > /cluster/proc/" + s.root + "/where"} {
		if r := s.as("node2", script); r.code == 0 || !strings.Contains(r.err, "No such file or directory") {
			t.Fatalf("uid 1000: %s: %d %q", script, r.code, r.err)
		}
	}
	for _, c := range []struct {
		node string
		u    asUser
		want []string
	}{{"node2", s.user, []string{s.mine}}, {"node2", asUser{}, both}, {"node1", s.user, both}} {
		if got := psCPIDs(t, s.clusterLab, c.node, c.u); !slices.Equal(got, c.want) {
			t.Fatalf("ssi ps on %s as uid %d: %v, want %v", c.node, c.u.uid, got, c.want)
		}
	}
	s.move(t, "node2", "node2", "node2")
}

// sorted is cpids in numeric order.
func sorted(cpids ...string) []string {
	out := slices.Clone(cpids)
	slices.SortFunc(out, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return out
}

// psCPIDs is what `ssi ps --json` lists to u on node, in numeric order.
func psCPIDs(t *testing.T, c *clusterLab, node string, u asUser) []string {
	t.Helper()
	r := c.ssi(u.cmd(node, ssiBin, "ps", "--json")...)
	var ps []struct {
		CPID int `json:"cpid"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.out), &ps) != nil {
		t.Fatalf("ssi ps on %s as uid %d: %d %q %q", node, u.uid, r.code, r.out, r.err)
	}
	var out []string
	for _, p := range ps {
		out = append(out, strconv.Itoa(p.CPID))
	}
	return sorted(out...)
}
