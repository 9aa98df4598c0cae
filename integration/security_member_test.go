package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/membership"
	"ssi/cluster/transport"
	"ssi/cluster/wire"
	"ssi/raftstore"
)

// A rogue member: this test binary again, run inside node3 with node3's
// own certificate (its data directory), speaking to the other nodes'
// cluster ports as any agent would. Chosen by SSI_ITEST_ROGUE, not
// SSI_ITEST_HELPER, whose switch lives in another file.
func init() {
	if os.Getenv("SSI_ITEST_ROGUE") != "" {
		os.Exit(rogueMain(os.Args[1:]))
	}
}

// rogueAnswer is what the rogue heard, printed as JSON for the test.
type rogueAnswer struct {
	Code     int    `json:"code"`               // HTTP status; 0: no answer
	Errno    string `json:"errno,omitempty"`    // the api.Error's errno
	Error    string `json:"error,omitempty"`    // its text, or why no answer
	Answered bool   `json:"answered,omitempty"` // stdio: the session said hello
}

// rogueMain: "post ADDR PATH BASE64-BODY" posts over ProtoRPC (following
// a redirect as agents do); "stdio ADDR CPID" offers itself as the
// holder of cpid's stdio on the migration port and says whether the
// session answered.
func rogueMain(args []string) int {
	id, err := transport.LoadIdentity("/var/lib/ssi/tls")
	if err != nil {
		fmt.Fprintln(os.Stderr, "rogue:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var a rogueAnswer
	switch args[0] {
	case "post":
		a = roguePost(ctx, id, args[1], args[2], args[3])
	case "stdio":
		a = rogueStdio(ctx, id, args[1], args[2])
	default:
		return 2
	}
	_ = json.NewEncoder(os.Stdout).Encode(a)
	return 0
}

func roguePost(ctx context.Context, id *transport.Identity, addr, path, body64 string) rogueAnswer {
	body, _ := base64.StdEncoding.DecodeString(body64)
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return transport.Dial(ctx, addr, transport.ProtoRPC, id)
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	resp, err := client.Do(req)
	if err != nil {
		return rogueAnswer{Error: err.Error()}
	}
	defer resp.Body.Close()
	var e api.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(b, &e)
	return rogueAnswer{Code: resp.StatusCode, Errno: e.Errno, Error: e.Error}
}

func rogueStdio(ctx context.Context, id *transport.Identity, addr, cpid string) rogueAnswer {
	n, _ := strconv.Atoi(cpid)
	conn, err := transport.Dial(ctx, addr, transport.ProtoMigrate, id)
	if err != nil {
		return rogueAnswer{Error: err.Error()}
	}
	defer conn.Close()
	fc := wire.NewConn(conn)
	// A holder's opening, with an epoch newer than any real holder's.
	_ = fc.SendJSON(wire.FrHeader, wire.StreamHeader{Kind: wire.KindStdio, CPID: n})
	_ = fc.SendJSON(wire.FrHeader, map[string]any{"epoch": 1 << 20, "in": 0, "sig": 0})
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, _, err := fc.Recv()
	if err != nil {
		return rogueAnswer{Error: err.Error()}
	}
	return rogueAnswer{Answered: true, Error: fmt.Sprintf("the session sent %q", typ)}
}

// memberLab is a three-node lab and node3's rogue.
type memberLab struct {
	*clusterLab
	addr map[string]string // node -> cluster address
}

// rogue runs the rogue in node3 and returns what it heard.
func (c *memberLab) rogue(t *testing.T, args ...string) rogueAnswer {
	t.Helper()
	out := c.must(append([]string{"exec", "node3", "--", "env", "SSI_ITEST_ROGUE=1", testBin}, args...)...)
	var a rogueAnswer
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("rogue %v: %q: %v", args, out, err)
	}
	return a
}

// post has the rogue post v (JSON, or a raftstore.Command encoded for
// /v1/apply) to node's cluster port.
func (c *memberLab) post(t *testing.T, node, path string, v any) rogueAnswer {
	t.Helper()
	var body []byte
	var err error
	if cmd, ok := v.(raftstore.Command); ok {
		body, err = raftstore.EncodeCommand(cmd)
	} else {
		body, err = json.Marshal(v)
	}
	if err != nil {
		t.Fatal(err)
	}
	return c.rogue(t, "post", c.addr[node], path, base64.StdEncoding.EncodeToString(body))
}

func wantOK(t *testing.T, what string, a rogueAnswer) {
	t.Helper()
	if a.Code != http.StatusOK {
		t.Fatalf("%s: %+v, want 200", what, a)
	}
}

func wantEPERM(t *testing.T, what string, a rogueAnswer) {
	t.Helper()
	if a.Code != http.StatusConflict || a.Errno != "EPERM" {
		t.Fatalf("%s: %+v, want 409 EPERM", what, a)
	}
}

// TestMemberActsOnlyAsItself: node3, with its own certificate, may
// register and update itself, but not register as node2, apply a
// command about node2, hold the stdio of a process running on node1,
// or kill node1's root process claiming uid 0. Each legitimate version
// works first.
func TestMemberActsOnlyAsItself(t *testing.T) {
	c := &memberLab{clusterLab: newClusterLab(t, "itsecmem", "10.213.84.0/24", "--nodes", "3"),
		addr: map[string]string{}}
	ns := c.agree("node1", three, 10*time.Second)
	st, _ := c.status("node1")
	for _, n := range ns {
		c.addr[n.Name] = n.Addr
	}
	// A member that does not lead, other than the rogue: it redirects
	// registrations to the leader.
	relay := "node1"
	if st.Leader == "node1" {
		relay = "node2"
	}
	t.Run("register", func(t *testing.T) { testRogueRegister(t, c, st.Leader, relay) })
	t.Run("apply", func(t *testing.T) { testRogueApply(t, c, st.Leader) })
	t.Run("stdio", func(t *testing.T) { testRogueStdio(t, c) })
	t.Run("kill", func(t *testing.T) { testRogueKill(t, c) })
}

// node2 is node2's record as node1 lists it.
func (c *memberLab) node2(t *testing.T) nodeInfo {
	t.Helper()
	ns, ok := c.nodes("node1")
	if !ok || len(ns) != 3 || ns[1].Name != "node2" {
		t.Fatalf("ssi nodes on node1: %+v", ns)
	}
	return ns[1]
}

// rogueAddr is where the rogue would have node2's traffic go: an address
// of the lab's subnet no node has.
const rogueAddr = "10.213.84.99:7700"

func testRogueRegister(t *testing.T, c *memberLab, leader, relay string) {
	digest, err := membership.UsersDigest(membership.PasswdFile)
	if err != nil {
		t.Fatal(err)
	}
	me := map[string]any{"name": "node3", "addr": c.addr["node3"], "cpus": 1, "memory": 1 << 30, "users_digest": digest}
	wantOK(t, "node3 registering itself through "+relay, c.post(t, relay, "/v1/join", me))
	before := c.node2(t)
	as2 := map[string]any{"name": "node2", "addr": rogueAddr, "cpus": 64, "memory": 1 << 40}
	wantEPERM(t, "node3 registering as node2 through "+relay, c.post(t, relay, "/v1/join", as2))
	wantEPERM(t, "node3 registering as node2 with the leader", c.post(t, leader, "/v1/join", as2))
	if after := c.node2(t); after.Addr != before.Addr || after.State != "up" || after.Voter != before.Voter {
		t.Fatalf("node2 was %+v, is %+v", before, after)
	}
}

func testRogueApply(t *testing.T, c *memberLab, leader string) {
	self := raftstore.NodeUpsert{Name: "node3", Addr: c.addr["node3"], State: raftstore.NodeUp, CPUs: 1, Memory: 1 << 30}
	wantOK(t, "node3 updating itself", c.post(t, leader, "/v1/apply", self))
	before := c.node2(t)
	other := raftstore.NodeUpsert{Name: "node2", Addr: rogueAddr, State: raftstore.NodeUp, CPUs: 64}
	wantEPERM(t, "node3 updating node2", c.post(t, leader, "/v1/apply", other))
	if after := c.node2(t); after.Addr != before.Addr {
		t.Fatalf("node2 was %+v, is %+v", before, after)
	}
}

// cpidOf is the cpid of the one process node lists whose argv is argv.
func (c *memberLab) cpidOf(t *testing.T, node string, argv ...string) string {
	t.Helper()
	var cpid string
	eventually(t, fmt.Sprintf("%v to be listed on %s", argv, node), 10*time.Second, func() bool {
		var ps []api.ProcInfo
		if !c.on(node, &ps, "ps", "--json") {
			return false
		}
		for _, p := range ps {
			if strings.Join(p.Argv, " ") == strings.Join(argv, " ") {
				cpid = strconv.Itoa(p.CPID)
				return true
			}
		}
		return false
	})
	return cpid
}

// An attached `ssi run` on node1 talks to its process through the
// holder node1 has; node3 offering itself as the holder is not heard,
// and the process's stdio goes on as before.
func testRogueStdio(t *testing.T, c *memberLab) {
	cmd, stdin, lines := c.attached(t, "exec", "node1", "--", ssiBin, "run", "--", "cat")
	defer stop(t, cmd)
	echo := func(s string) {
		t.Helper()
		fmt.Fprintln(stdin, s)
		if got, err := lines.next(time.Minute); err != nil || got != s+"\n" {
			t.Fatalf("cat answered %q, %v, want %q", got, err, s)
		}
	}
	echo("before")
	cpid := c.cpidOf(t, "node1", "cat")
	if a := c.rogue(t, "stdio", c.addr["node1"], cpid); a.Answered {
		t.Fatalf("node1's session took node3 as the holder of %s: %+v", cpid, a)
	}
	echo("after")
}

// Root on node1 kills its own root process; node3 claiming uid 0 to
// kill or move another one on the peer port is refused, and that
// process lives on, where it was, until root on node1 ends it (SIGTERM,
// not the rogue's SIGKILL).
func testRogueKill(t *testing.T, c *memberLab) {
	a := strings.TrimSpace(c.must("exec", "node1", "--", ssiBin, "run", "-d", "--", "sleep", "1001"))
	b := strings.TrimSpace(c.must("exec", "node1", "--", ssiBin, "run", "-d", "--", "sleep", "1002"))
	c.must("exec", "node1", "--", ssiBin, "kill", a)
	if r := c.ssi("exec", "node1", "--", ssiBin, "wait", a); r.code != 128+15 {
		t.Fatalf("ssi wait %s after ssi kill: exit %d (%s)", a, r.code, r.err)
	}
	cpid, _ := strconv.Atoi(b)
	kill := api.KillRequest{CPID: cpid, Signal: 9, UID: 0, Forwarded: true}
	wantEPERM(t, "node3 killing node1's root process as uid 0", c.post(t, "node1", "/v1/kill", kill))
	kill.Forwarded = false
	wantEPERM(t, "node3 asking node1 to kill its root process as uid 0", c.post(t, "node1", "/v1/kill", kill))
	move := api.MigrateRequest{CPID: cpid, Target: "node2", UID: 0}
	wantEPERM(t, "node3 moving node1's root process as uid 0", c.post(t, "node1", "/v1/migrate", move))
	if got := strings.TrimSpace(c.must("exec", "node2", "--", "cat", "/cluster/proc/"+b+"/where")); got != "node1" {
		t.Fatalf("after the rogue's move, %s runs on %q", b, got)
	}
	if got := c.cpidOf(t, "node1", "sleep", "1002"); got != b {
		t.Fatalf("cpid %s is not listed (%q)", b, got)
	}
	c.must("exec", "node1", "--", ssiBin, "kill", b)
	if r := c.ssi("exec", "node1", "--", ssiBin, "wait", b); r.code != 128+15 {
		t.Fatalf("ssi wait %s: exit %d, want 143: the rogue's SIGKILL got through (%s)", b, r.code, r.err)
	}
}
