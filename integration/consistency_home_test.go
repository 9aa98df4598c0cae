package integration

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// homeWork is the checker's home workload: file operations on the
// model's registers, each followed by reads of what it touched.
type homeWork struct{ *checker }

// homeOp is one file operation and the state it leaves.
type homeOp struct {
	kind   string
	argv   []string
	stdin  []byte
	user   bool
	after  map[string][]byte // path -> content after (nil: absent)
	target string            // the path the reads check first
}

func (k homeWork) randSize(limit int) int {
	switch k.rng.Intn(20) {
	case 0:
		return 1
	case 1:
		return limit
	}
	return max(1, min(limit, int(math.Exp(k.rng.Float64()*math.Log(float64(limit))))))
}

func (k homeWork) randData(n int) []byte {
	b := make([]byte, n)
	k.rng.Read(b)
	return b
}

func (k homeWork) reg(p string) *register {
	r := k.files[p]
	if r == nil {
		r = &register{seen: map[string]bool{"absent": true}}
		k.files[p] = r
	}
	return r
}

// nextOp chooses an operation on one of the root's six or the user's
// four files.
func (k homeWork) nextOp() homeOp {
	user := k.rng.Intn(4) == 0
	dir, slots := linDir, 6
	if user {
		dir, slots = linDir+"/u", 4
	}
	var names, existing []string
	for i := 0; i < slots; i++ {
		p := fmt.Sprintf("%s/f%d", dir, i)
		names = append(names, p)
		if k.reg(p).data != nil {
			existing = append(existing, p)
		}
	}
	p := k.pick(names)
	cur := k.files[p].data
	kinds := []string{"write", "shorter", "append", "rename", "unlink"}
	kind := "write"
	if cur != nil {
		kind = k.pick(kinds)
	}
	others := without(existing, p)
	if kind == "rename" && len(others) == 0 || kind == "shorter" && len(cur) < 2 || kind == "append" && len(cur) >= maxFile {
		kind = "write"
	}
	op := homeOp{kind: kind, user: user, target: p, after: map[string][]byte{}}
	switch kind {
	case "write":
		op.stdin = k.randData(k.randSize(maxFile))
		op.argv = []string{"sh", "-c", `cat > "$1"`, "sh", p}
		op.after[p] = op.stdin
	case "shorter":
		op.stdin = k.randData(k.randSize(len(cur) - 1))
		op.argv = []string{"sh", "-c", `cat > "$1"`, "sh", p}
		op.after[p] = op.stdin
	case "append":
		op.stdin = k.randData(k.randSize(min(maxFile-len(cur), 64<<10)))
		op.argv = []string{"sh", "-c", `cat >> "$1"`, "sh", p}
		op.after[p] = append(slices.Clone(cur), op.stdin...)
	case "rename":
		to := k.pick(others)
		op.argv = []string{"mv", "-f", "--", p, to}
		op.after[p], op.after[to], op.target = nil, cur, to
	case "unlink":
		op.argv = []string{"rm", "--", p}
		op.after[p] = nil
	}
	return op
}

// settle returns a command that puts every path of op into its state
// after op, whatever op did before it failed: the way to retry it.
func settle(op homeOp) ([]string, []byte) {
	script, args := "", []string{"sh"}
	var stdin []byte
	for p, data := range op.after {
		args = append(args, p)
		i := strconv.Itoa(len(args) - 1)
		if data == nil {
			script += `rm -f -- "$` + i + `" && `
		} else {
			script += `cat > "$` + i + `" && `
			stdin = data
		}
	}
	return append([]string{"sh", "-c", script + "true"}, args...), stdin
}

// homeRound issues one file operation (by the leader every other round)
// and reads what it touched on every other live node at once.
func (k homeWork) homeRound() {
	k.t.Helper()
	op := k.nextOp()
	writer := ""
	if k.n.homeOps%2 == 0 {
		writer = k.leader()
	}
	if writer == "" {
		writer = k.pick(k.live)
	} else {
		k.n.leaderWrites++
	}
	k.n.homeOps++
	if op.user {
		k.n.users++
	}
	r := k.exec(writer, op.user, op.stdin, op.argv...)
	if r.code != 0 {
		k.recover(writer, op, r)
	}
	for p, data := range op.after {
		reg := k.reg(p)
		reg.data = data
		reg.seen[state(data)] = true
	}
	readers := without(k.live, writer)
	paths := []string{op.target}
	for p := range op.after {
		if p != op.target {
			paths = append(paths, p)
		}
	}
	k.verify(readers, paths, fmt.Sprintf("after %s on %s", op.kind, writer))
}

// recover retries a failed operation until its paths hold their state
// after it; a failure that is not an election's is counted.
func (k homeWork) recover(writer string, op homeOp, r result) {
	k.t.Helper()
	msg := strings.TrimSpace(r.err)
	if k.retryOK && retryable(msg) {
		k.n.retried++
		k.note("retried", "%s of %s on %s: %s", op.kind, op.target, writer, msg)
	} else {
		k.n.writeErrs++
		k.note("failed write", "%s of %s on %s: exit %d: %s", op.kind, op.target, writer, r.code, msg)
	}
	argv, stdin := settle(op)
	deadline := time.Now().Add(45 * time.Second)
	for {
		r = k.exec(writer, op.user, stdin, argv...)
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: retrying %s of %s on %s for 45s: exit %d: %s", k.phase, op.kind, op.target, writer, r.code, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
