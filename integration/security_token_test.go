package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tokenInfo mirrors `ssi token list --json`.
type tokenInfo struct {
	ID     string `json:"id"`
	Uses   int    `json:"uses"`
	Used   int    `json:"used"`
	Status string `json:"status"`
}

// TestSecurityToken: the lab's join token is nowhere uid 1000 can read
// it (ps, /proc, the lab's and the agents' files); an expired, a revoked
// and a used-up token fail to join with their own error, while a fresh
// one joins, also through a member that holds no CA key.
func TestSecurityToken(t *testing.T) {
	c := newClusterLab(t, "itsectok", "10.213.82.0/24", "--nodes", "5", "--no-agents")
	two := []string{"node1", "node2"}
	for _, n := range two {
		c.must("start", n)
	}
	c.agree("node1", two, 30*time.Second)
	labDir := filepath.Join("/var/lib/ssi-lab", "itsectok")
	secrets := labSecrets(t, labDir)

	// The agents that join stay up for the later steps: they stop with
	// the whole test.
	tl := &tokenLab{top: t}
	t.Run("unreadable", func(t *testing.T) { tokenUnreadable(t, labDir, secrets) })
	t.Run("expired and revoked", func(t *testing.T) { tl.c = c.with(t); tl.spentTokensRefused(t) })
	t.Run("one use", func(t *testing.T) { tl.c = c.with(t); tl.oneUseToken(t) })
	// The agents given their token in the environment leak it neither.
	t.Run("unreadable after", func(t *testing.T) {
		tokenUnreadable(t, labDir, secrets)
		keysPrivate(t, labDir)
	})
}

// labSecrets reads, as root, the lab's token where the lab keeps it,
// checks that the lab's files holding it are root's only, and returns
// the token and its hash (which admits a newcomer as well).
func labSecrets(t *testing.T, labDir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(labDir, "join-token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	if !strings.HasPrefix(tok, "ssi1.") {
		t.Fatalf("the lab's token file holds %d bytes that are not a token", len(tok))
	}
	for _, f := range []string{"join-token", "lab.json"} {
		st, err := os.Stat(filepath.Join(labDir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v: want mode 0600", f, st.Mode(), err)
		}
	}
	sum := sha256.Sum256([]byte(tok))
	return []string{tok, hex.EncodeToString(sum[:])}
}

// scanScript runs as uid 1000 with the strings to look for on stdin
// (never in its arguments nor environment): it prints "FOUND where" for
// each place it reads one: ps, every /proc/*/environ and cmdline it may
// read, and every file it may open under the directories in its
// arguments.
const scanScript = `needles=$(cat)
pat() { printf '%s\n' "$needles"; }
ps -eo args | grep -qF -f <(pat) && echo "FOUND ps -eo args"
grep -alsF -f <(pat) /proc/[0-9]*/environ /proc/[0-9]*/cmdline | sed 's/^/FOUND /'
grep -rlsF -D skip -f <(pat) -- "$@" | sed 's/^/FOUND /'
echo scanned`

// scanAsUser runs scanScript as uid 1000 over dirs, looking for needles.
func scanAsUser(t *testing.T, env []string, needles []string, dirs ...string) []string {
	t.Helper()
	args := append([]string{"--reuid", "1000", "--regid", "1000", "--clear-groups",
		"bash", "-c", scanScript, "scan"}, dirs...)
	r, err := run(2*time.Minute, env, []byte(strings.Join(needles, "\n")+"\n"), "setpriv", args...)
	if err != nil || !strings.Contains(r.out, "scanned") {
		t.Fatalf("scan as uid 1000: %v\n%s%s", err, r.out, r.err)
	}
	var found []string
	for _, line := range strings.Split(r.out, "\n") {
		if where, ok := strings.CutPrefix(line, "FOUND "); ok {
			found = append(found, where)
		}
	}
	return found
}

// tokenUnreadable: the scan first finds what uid 1000 may read (a node's
// address in ps, in the agents' command lines and in their logs, and a
// marker in its own environment), then finds neither the token nor its
// hash anywhere.
func tokenUnreadable(t *testing.T, labDir string, secrets []string) {
	marker := "itsectok-marker-" + strings.Repeat("x", 8)
	found := scanAsUser(t, []string{"SCAN_MARKER=" + marker}, []string{"10.213.82.11", marker}, labDir)
	joined := strings.Join(found, "\n")
	for _, want := range []string{"ps -eo args", "/cmdline", "/environ", "agent.log"} {
		if !strings.Contains(joined, want) {
			t.Fatalf("the scan as uid 1000 misses what it may read (%s); it found:\n%s", want, joined)
		}
	}
	if found := scanAsUser(t, nil, secrets, labDir); len(found) != 0 {
		t.Fatalf("uid 1000 reads the join token or its hash in:\n%s", strings.Join(found, "\n"))
	}
}

// createToken makes a token on node1 and returns it and its id.
func createToken(t *testing.T, c *clusterLab, args ...string) (string, string) {
	t.Helper()
	r := c.ssi(append([]string{"exec", "node1", "--", ssiBin, "token", "create"}, args...)...)
	m := regexp.MustCompile(`token id ([0-9a-f]+)`).FindStringSubmatch(r.err)
	if r.code != 0 || m == nil {
		t.Fatalf("token create %v: exit %d\n%s%s", args, r.code, r.out, r.err)
	}
	return strings.TrimSpace(r.out), m[1]
}

// tokenStatus is the status `ssi token list` gives the token id.
func tokenStatus(c *clusterLab, id string) string {
	var list []tokenInfo
	if !c.on("node1", &list, "token", "list", "--json") {
		return ""
	}
	for _, tk := range list {
		if tk.ID == id {
			return tk.Status
		}
	}
	return ""
}

// tokenLab is the lab of TestSecurityToken as its steps use it: c
// reports to the step, the agents that joined stop with the test (top).
type tokenLab struct {
	c   *clusterLab
	top *testing.T
}

// withToken is the lab's environment with tok for an agent (never on
// its command line) that joins without discovery.
func (tl *tokenLab) withToken(tok string) []string {
	return append(append([]string(nil), tl.c.env...), "SSI_JOIN_TOKEN="+tok, "SSI_DISCOVERY_ENABLED=false")
}

// refusedWith expects an agent on node, given tok and joining through
// the member at via, to stop with why.
func (tl *tokenLab) refusedWith(t *testing.T, node, tok, via, why string) {
	t.Helper()
	r := ssiWithin(t, time.Minute, tl.withToken(tok), tl.c.args("exec", node, "--", ssiBin, "agent",
		"--node-name", node, "--join", via)...)
	t.Logf("agent on %s: exit %d: %s", node, r.code, lastLine(r.err))
	if r.code == 0 || !strings.Contains(r.err, why) {
		t.Fatalf("agent on %s with a token that should be refused (%s): exit %d\n%s", node, why, r.code, r.err)
	}
}

// joinedWith starts an agent on node with tok, joining through via, and
// waits until the cluster lists want up; the agent runs until the test
// ends, its output in the buffer returned.
func (tl *tokenLab) joinedWith(node, tok, via string, want []string) *syncBuffer {
	out := &syncBuffer{}
	cc := *tl.c
	cc.env = tl.withToken(tok)
	cmd := cc.background(out, "exec", node, "--", ssiBin, "agent", "--node-name", node, "--join", via)
	tl.top.Cleanup(func() {
		if tl.top.Failed() {
			tl.top.Logf("agent on %s:\n%s", node, out.String())
		}
		stop(tl.top, cmd)
	})
	ns := tl.c.agree("node1", want, 40*time.Second)
	tl.c.t.Logf("%s joined: %d nodes up", node, len(ns))
	return out
}

const node1Addr = "10.213.82.11:7700"

// spentTokensRefused: a token past its ttl and a revoked one each stop a
// new agent with their reason; a fresh token then joins the same node.
func (tl *tokenLab) spentTokensRefused(t *testing.T) {
	c := tl.c
	short, shortID := createToken(t, c, "--ttl", "2s")
	eventually(t, "ssi token list to show the 2s token expired", 30*time.Second, func() bool {
		return tokenStatus(c, shortID) == "expired"
	})
	tl.refusedWith(t, "node3", short, node1Addr, "join token expired")

	revoked, revokedID := createToken(t, c)
	if tokenStatus(c, revokedID) != "valid" {
		t.Fatalf("a new token is %q", tokenStatus(c, revokedID))
	}
	c.must("exec", "node1", "--", ssiBin, "token", "revoke", revokedID)
	if st := tokenStatus(c, revokedID); st != "revoked" {
		t.Fatalf("a revoked token is %q", st)
	}
	tl.refusedWith(t, "node3", revoked, node1Addr, "join token revoked")

	fresh, _ := createToken(t, c)
	tl.joinedWith("node3", fresh, node1Addr, three)
}

// oneUseToken: a token for one join admits node4 and refuses node5, who
// asks node4, a member without the CA key (cluster.voters is 3); a fresh
// token then gets node5 in through node4, which sends it to a voter.
func (tl *tokenLab) oneUseToken(t *testing.T) {
	c := tl.c
	once, onceID := createToken(t, c, "--uses", "1")
	four := []string{"node1", "node2", "node3", "node4"}
	out4 := tl.joinedWith("node4", once, node1Addr, four)
	var list []tokenInfo
	if !c.on("node1", &list, "token", "list", "--json") {
		t.Fatal("token list")
	}
	for _, tk := range list {
		if tk.ID == onceID && (tk.Used != 1 || tk.Uses != 1 || tk.Status != "used up") {
			t.Fatalf("the one-use token after a join: %+v", tk)
		}
	}
	node4 := "10.213.82.14:7700"
	tl.refusedWith(t, "node5", once, node4, "join token used up")

	if _, err := os.Stat(filepath.Join("/var/lib/ssi-lab/itsectok/node4/data/tls/ca.key")); err == nil {
		t.Error("node4, not a voter, holds the ca key")
	}
	fresh, _ := createToken(t, c)
	tl.joinedWith("node5", fresh, node4, append(four, "node5"))
	if !strings.Contains(out4.String(), "sent the newcomer to "+node1Addr) {
		t.Fatalf("node4 did not send node5 to the leader; its log:\n%s", out4.String())
	}
	var info json.RawMessage
	if !c.on("node5", &info, "status", "--json") {
		t.Fatal("node5 does not answer as a member")
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// keysPrivate: in every node's data directory, tls/ and raft/ are the
// agent's only, and so is every key.
func keysPrivate(t *testing.T, labDir string) {
	dirs, _ := filepath.Glob(filepath.Join(labDir, "node*", "data"))
	if len(dirs) != 5 {
		t.Fatalf("data directories %v", dirs)
	}
	for _, d := range dirs {
		for _, sub := range []string{"tls", "raft"} {
			if st, err := os.Stat(filepath.Join(d, sub)); err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("%s/%s: %v, %v: want mode 0700", d, sub, st.Mode(), err)
			}
		}
		keys, _ := filepath.Glob(filepath.Join(d, "tls", "*.key"))
		if len(keys) == 0 {
			t.Errorf("%s: no keys", d)
		}
		for _, k := range keys {
			if st, err := os.Stat(k); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v, %v: want mode 0600", k, st.Mode(), err)
			}
		}
	}
}
