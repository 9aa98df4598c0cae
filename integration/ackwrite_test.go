package integration

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// holdWrite is the helper "holdwrite PATH BYTES SEED": it writes BYTES
// bytes of ackData(SEED) to PATH without closing it, says "written",
// waits for a line on stdin, then closes and prints close's result:
// "close: ok" or "close: ERRNO-TEXT".
func holdWrite(args []string) int {
	n, _ := strconv.Atoi(args[1])
	seed, _ := strconv.ParseInt(args[2], 10, 64)
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		fmt.Println("open:", err)
		return 1
	}
	if _, err := f.Write(ackData(n, seed)); err != nil {
		fmt.Println("write:", err)
		return 1
	}
	fmt.Println("written")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := f.Close(); err != nil {
		fmt.Println("close:", err)
		return 0
	}
	fmt.Println("close: ok")
	return 0
}

func ackData(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// TestAcknowledgedWrite: a writer on node1 holds unflushed data in a
// home file while a partition cuts node1 off and another process on
// node1 stats the file; the writer closes after the heal, or during the
// partition. Either close fails, or the data is there, byte for byte,
// on every node: never close() == 0 with the data missing.
func TestAcknowledgedWrite(t *testing.T) {
	c := newClusterLab(t, "itack", "10.213.42.0/24", "--nodes", "3")
	c.agree("node1", three, 10*time.Second)
	for i, tc := range []struct {
		name        string
		closeDuring bool
	}{
		{"the writer closes after the heal", false},
		{"the writer closes during the partition", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := c.with(t)
			ackCase(t, c, fmt.Sprintf("/cluster/home/ack%d", i), 300_000+i*4096, int64(42+i), tc.closeDuring)
		})
	}
}

// ackCase runs one writer through one partition of node1.
func ackCase(t *testing.T, c *clusterLab, path string, size int, seed int64, closeDuring bool) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	defer c.ssi("heal", "node1")
	leader := followerNode1(t, c)
	cmd, in, lines := c.attached(t, "exec", "node1", "--", "env", "SSI_ITEST_HELPER=holdwrite", self, path, itoa(size), strconv.FormatInt(seed, 10))
	defer stop(t, cmd)
	if l, err := lines.next(time.Minute); err != nil || l != "written\n" {
		t.Fatalf("the writer: %q %v", l, err)
	}
	c.must("partition", "node1")
	t.Logf("leader %s; node1 partitioned with %d bytes unflushed in %s", leader, size, path)
	statOn1 := func(when string) {
		r := c.ssi("exec", "node1", "--", "timeout", "30", "stat", "-c", "%s", path)
		t.Logf("stat on node1 %s: exit %d %q %s", when, r.code, strings.TrimSpace(r.out), strings.TrimSpace(r.err))
	}
	statOn1("right after the partition")
	eventually(t, "node1 to know it lost quorum", 30*time.Second, func() bool {
		s, ok := c.status("node1")
		return ok && !s.Quorum
	})
	statOn1("once it knows it lost quorum")
	closed := ""
	if closeDuring {
		fmt.Fprintln(in, "close")
		closed, _ = lines.next(5 * time.Second)
		t.Logf("close during the partition: %q", strings.TrimSpace(closed))
	}
	c.must("heal", "node1")
	c.agree("node2", three, 30*time.Second)
	if !closeDuring {
		fmt.Fprintln(in, "close")
	}
	if closed == "" {
		if closed, err = lines.next(time.Minute); err != nil {
			t.Fatalf("the writer's close did not return within a minute of the heal: %v", err)
		}
	}
	if err := waitFor(cmd, 30*time.Second); err != nil {
		t.Fatalf("the writer: %v", err)
	}
	closed = strings.TrimSpace(closed)
	t.Logf("the writer: %s", closed)
	if closed != "close: ok" {
		if !strings.HasPrefix(closed, "close: ") {
			t.Fatalf("the writer printed %q", closed)
		}
		return // close reported the failure: the writer knows
	}
	checkAcked(t, c, path, ackData(size, seed))
}

// checkAcked fails the test unless every node reads data at path at
// once: a read after close returned must reflect it (one that only does
// later is stale, a failure too, told apart from a lost write).
func checkAcked(t *testing.T, c *clusterLab, path string, data []byte) {
	t.Helper()
	size := len(data)
	sum := sha256.Sum256(data)
	want := fmt.Sprintf("%d %s", size, hex.EncodeToString(sum[:]))
	for _, n := range three {
		read := func() string {
			r := c.ssi("exec", n, "--", "sh", "-c", readScript, "sh", path)
			return strings.TrimSpace(r.out)
		}
		first := read()
		if first == want {
			continue
		}
		got := first
		start := time.Now()
		for time.Since(start) < 10*time.Second && got != want {
			time.Sleep(100 * time.Millisecond)
			got = read()
		}
		if got != want {
			t.Errorf("LOST: close returned 0 but %s reads %s, want %s", n, short(got), short(want))
		} else {
			t.Errorf("STALE: %s read %s right after close returned, the data %v later", n, short(first), time.Since(start).Round(time.Millisecond))
		}
	}
}

// followerNode1 makes sure node1 does not lead (restarting it while it
// does) and returns the leader; if node1 keeps the lead it says so and
// the case runs with node1 as the leader cut off.
func followerNode1(t *testing.T, c *clusterLab) string {
	t.Helper()
	leader := ""
	for try := 0; try < 3; try++ {
		eventually(t, "a leader", 20*time.Second, func() bool {
			s, ok := c.status("node2")
			leader = s.Leader
			return ok && leader != ""
		})
		if leader != "node1" {
			return leader
		}
		c.must("kill", "node1")
		eventually(t, "another leader", 20*time.Second, func() bool {
			s, ok := c.status("node2")
			return ok && s.Leader != "" && s.Leader != "node1"
		})
		c.must("start", "node1")
		c.agree("node1", three, 30*time.Second)
	}
	t.Logf("node1 still leads after 3 restarts: cutting off the leader")
	return leader
}
