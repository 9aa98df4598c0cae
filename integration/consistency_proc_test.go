package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// procWork is the checker's process workload: runs, moves, kills and
// waits, each followed by reads of the process's listing and where.
type procWork struct{ *checker }

// psEntry is what the checker reads of `ssi ps --json`.
type psEntry struct {
	CPID int    `json:"cpid"`
	Node string `json:"node"`
}

// listed reads, on each live node at once, whether /cluster/proc and
// `ssi ps --json` list cpid (and on which node ps says it runs): two
// reads a node. want is the node it runs on, "" once it has ended.
func (k procWork) listed(cpid, want, why string) {
	k.t.Helper()
	res := k.onEach(k.live, "sh", "-c", `test -d /cluster/proc/"$1" && echo present || echo absent; "$2" ps --json`,
		"sh", cpid, ssiBin)
	for _, n := range k.live {
		out := res[n].out
		dir, js, _ := strings.Cut(out, "\n")
		var ps []psEntry
		err := json.Unmarshal([]byte(js), &ps)
		on := ""
		for _, p := range ps {
			if strconv.Itoa(p.CPID) == cpid {
				on = p.Node
			}
		}
		k.n.reads += 2
		if (dir == "present") != (want != "") {
			k.n.stale++
			k.note("stale process listing", "/cluster/proc/%s on %s %s: %s", cpid, n, why, dir)
		}
		if err != nil || on != want {
			k.n.stale++
			k.note("stale process listing", "ssi ps on %s %s lists %s on %q, want %q (%v)", n, why, cpid, on, want, err)
		}
	}
}

// whereOn reads /cluster/proc/CPID/where on every live node at once.
func (k procWork) whereOn(cpid, want, why string) {
	k.t.Helper()
	res := k.onEach(k.live, "cat", "/cluster/proc/"+cpid+"/where")
	for _, n := range k.live {
		k.n.reads++
		if got := strings.TrimSpace(res[n].out); got != want {
			k.n.stale++
			k.note("stale where", "where of %s on %s %s reads %q, want %q %s", cpid, n, why, got, want, strings.TrimSpace(res[n].err))
		}
	}
}

// counterProg is the process the checker moves: it counts in memory.
var counterProg = []string{"bash", "-c", "i=0; while :; do i=$((i+1)); sleep 0.1; done"}

// procRound runs a counter on a random node (as uid 1000 in one round of
// four), moves it back-to-back from random nodes (uid 1000's moved by
// uid 1000 or root at random), then kills it and waits for it from
// random nodes, reading after each step.
func (k procWork) procRound() {
	k.t.Helper()
	user := k.n.procs%procRounds == procRounds-1
	node := k.pick(k.live)
	r := k.procCmd(node, user, append([]string{ssiBin, "run", "-d", "--"}, counterProg...)...)
	cpid := strings.TrimSpace(r.out)
	if _, err := strconv.Atoi(cpid); r.code != 0 || err != nil {
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi run -d on %s: exit %d %q %s", node, r.code, r.out, strings.TrimSpace(r.err))
		return
	}
	k.n.procs++
	k.listed(cpid, node, fmt.Sprintf("right after ssi run -d on %s printed it", node))
	where := node
	for i := 0; i < movesPerRound && where != ""; i++ {
		where = k.move(cpid, node, where, i == 0, user)
	}
	k.finish(cpid, node, where, user)
}

// procCmd runs a process command, retried while an election refuses it.
func (k procWork) procCmd(node string, user bool, argv ...string) result {
	k.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		r := k.exec(node, user, nil, argv...)
		if r.code == 0 || !k.retryOK || !retryable(r.err) || time.Now().After(deadline) {
			return r
		}
		k.n.retried++
		k.note("retried", "%s on %s: %s", strings.Join(argv, " "), node, strings.TrimSpace(r.err))
		time.Sleep(200 * time.Millisecond)
	}
}

// move writes a new node to where, issued from a random live node (the
// first move of a round from one that is neither source nor
// destination; root's process from its home or where it runs), reads
// where everywhere, and returns where it runs now.
func (k procWork) move(cpid, home, from string, third, user bool) string {
	k.t.Helper()
	targets := without(k.live, from)
	if len(targets) == 0 {
		return from
	}
	to := k.pick(targets)
	issuer := k.pick(k.live)
	if others := without(k.live, from, to); third && len(others) > 0 {
		issuer = others[0]
	}
	if !user {
		issuer = k.rootIssuer(home, from)
	}
	asUser := user && k.rng.Intn(2) == 0
	k.n.moves++
	r := k.procCmd(issuer, asUser, "bash", "-c", `printf '%s\n' "$1" > /cluster/proc/"$2"/where`, "-", to, cpid)
	if r.code != 0 {
		k.n.failedMoves++
		why := k.exec(issuer, false, nil, "cat", "/cluster/proc/"+cpid+"/cantmove")
		owner := "root's"
		if user {
			owner = "uid 1000's"
		}
		k.note("failed move", "%s (%s) %s -> %s written on %s: exit %d: %s (cantmove: %q)", cpid, owner, from, to, issuer, r.code,
			strings.TrimSpace(r.err), firstLine(strings.TrimSpace(why.out+why.err)))
		return k.settleWhere(cpid)
	}
	k.whereOn(cpid, to, fmt.Sprintf("right after the move %s -> %s (issued on %s) returned", from, to, issuer))
	return to
}

// settleWhere waits until every live node names the same live node as
// where the process runs, after a failed move; "" if it is gone.
func (k procWork) settleWhere(cpid string) string {
	k.t.Helper()
	where := ""
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		res := k.onEach(k.live, "cat", "/cluster/proc/"+cpid+"/where")
		where = strings.TrimSpace(res[k.live[0]].out)
		same := slices.Contains(k.live, where)
		for _, n := range k.live {
			same = same && strings.TrimSpace(res[n].out) == where
		}
		if same {
			return where
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.note("failed move", "after it the nodes did not agree where %s runs within 15s", cpid)
	return ""
}

// rootIssuer is a live node whose root may act on root's process homed
// on home and running on at (the trust model: another node's root acts
// on it as nobody).
func (k procWork) rootIssuer(home, at string) string {
	if ok := slices.DeleteFunc([]string{home, at}, func(n string) bool { return !slices.Contains(k.live, n) }); len(ok) > 0 {
		return k.pick(ok)
	}
	return home
}

// finish kills the process from a random node (root's from its home or
// where it runs) and waits for it from another: kill returning 0 means
// delivered, so the wait returns 143; once the wait returned, no node
// lists the process.
func (k procWork) finish(cpid, home, at string, user bool) {
	k.t.Helper()
	killer, waiter := k.pick(k.live), k.pick(k.live)
	if !user && at != "" {
		killer = k.rootIssuer(home, at)
	}
	want := 128 + 15
	r := k.procCmd(killer, user && k.rng.Intn(2) == 0, ssiBin, "kill", cpid)
	if r.code != 0 {
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi kill %s on %s: exit %d: %s", cpid, killer, r.code, strings.TrimSpace(r.err))
		// Do not leave it running: the next rounds count processes.
		k.exec(killer, false, nil, ssiBin, "kill", "-s", "KILL", cpid)
		want = -1
	}
	w, err := run(30*time.Second, k.c.env, nil, ssiBin, k.c.args("exec", waiter, "--", ssiBin, "wait", cpid)...)
	switch {
	case err != nil:
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi wait %s on %s after kill on %s: %v", cpid, waiter, killer, firstLine(err.Error()))
		k.exec(killer, false, nil, ssiBin, "kill", "-s", "KILL", cpid)
		return
	case want > 0 && w.code != want:
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi kill %s on %s returned 0 but ssi wait on %s exited %d, want %d: %s",
			cpid, killer, waiter, w.code, want, strings.TrimSpace(w.err))
	}
	k.listed(cpid, "", fmt.Sprintf("right after ssi wait on %s returned", waiter))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
