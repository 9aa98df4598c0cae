package membership

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"ssi/cluster/discovery"
)

// seen is node's beacon, from an address of its own.
func seen(node, state string) discovery.Seen {
	return discovery.Seen{Beacon: discovery.Beacon{Node: node, State: state, Addr: node + ":7700"},
		From: netip.AddrFrom4([4]byte{10, 0, 0, node[len(node)-1]})}
}

func TestDecide(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// heard: what a table that began listening at t0 holds at now, every
	// peer heard since t0.
	heard := func(now time.Duration, peers ...discovery.Seen) discovery.Heard {
		for i := range peers {
			peers[i].Since = t0
		}
		return discovery.Heard{Peers: peers, Now: t0.Add(now), Start: t0, Interval: time.Second, Wait: 3 * time.Second}
	}
	grace := formGrace(time.Second)
	sameSource := func(p discovery.Seen, as string) discovery.Seen {
		p.From = seen(as, "").From
		return p
	}
	withSilent := func(h discovery.Heard, silent ...discovery.Seen) discovery.Heard {
		for i := range silent {
			silent[i].Since = t0
		}
		h.Silent = silent
		return h
	}
	cases := []struct {
		name    string
		self    string
		heard   discovery.Heard
		waited  bool
		act     action
		targets []string
	}{
		{"alone, still looking", "n1", heard(0), false, actWait, nil},
		{"alone, looked long enough", "n1", heard(3 * time.Second), true, actBootstrap, nil},
		{"a member exists", "n1", heard(0, seen("n2", discovery.StateMember)), false, actJoin, []string{"n2:7700"}},
		{"smallest seeker forms", "n1", heard(3*time.Second, seen("n2", discovery.StateSeeking), seen("n3", discovery.StateSeeking)), true, actBootstrap, nil},
		{"others wait for it", "n2", heard(3*time.Second, seen("n1", discovery.StateSeeking), seen("n3", discovery.StateSeeking)), true, actWait, nil},
		{"members win over seekers", "n1", heard(3*time.Second, seen("n0", discovery.StateSeeking), seen("n3", discovery.StateMember)), true, actJoin, []string{"n3:7700"}},
		{"its turn is not over", "n2", heard(3*time.Second+grace-time.Millisecond, seen("n1", discovery.StateSeeking)), true, actWait, nil},
		{"its turn is over", "n2", heard(3*time.Second+grace, seen("n1", discovery.StateSeeking)), true, actBootstrap, nil},
		{"two turns below", "n3", heard(3*time.Second+grace, seen("n1", discovery.StateSeeking), seen("n2", discovery.StateSeeking)), true, actWait, nil},
		{"both over", "n3", heard(3*time.Second+2*grace, seen("n1", discovery.StateSeeking), seen("n2", discovery.StateSeeking)), true, actBootstrap, nil},
		{"one source, one turn", "n3", heard(3*time.Second+grace, seen("n1", discovery.StateSeeking), sameSource(seen("n2", discovery.StateSeeking), "n1")), true, actBootstrap, nil},
		{"a quiet seeker keeps its turn", "n2", withSilent(heard(3*time.Second+grace-time.Millisecond), seen("n1", discovery.StateSeeking)), true, actWait, nil},
		{"its turn over", "n2", withSilent(heard(3*time.Second+grace), seen("n1", discovery.StateSeeking)), true, actBootstrap, nil},
		{"pace unknown: wait for the smallest", "n2", discovery.Heard{Peers: []discovery.Seen{seen("n1", discovery.StateSeeking)}, Now: t0.Add(time.Hour), Start: t0}, true, actWait, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			act, targets := decide(c.self, c.heard, c.waited)
			if act != c.act || !reflect.DeepEqual(targets, c.targets) {
				t.Fatalf("decide = %v %v, want %v %v", act, targets, c.act, c.targets)
			}
		})
	}
}

// lan simulates agents and forgers beaconing on one LAN, with a fake
// clock: each agent runs discovery's table and the join loop's decision,
// as ObtainIdentity does, every poll.
type lan struct {
	now      time.Time
	interval time.Duration
	wait     time.Duration
	form     time.Duration // from deciding to form to the first member beacon
	agents   []*simAgent
	forgers  []forger
}

type simAgent struct {
	name     string
	start    time.Duration
	ip       netip.Addr
	table    *discovery.Table
	begun    time.Time
	decided  action
	memberAt time.Time // its beacons say member from then on
}

// forger announces a seeker named name from first to last (zero: for
// ever), from address 10.0.66.host, and never forms.
type forger struct {
	name        string
	first, last time.Duration
	host        byte
}

const poll = 250 * time.Millisecond // the join loop's tick (identity.go)

// run runs the LAN until every agent is a member or limit passes, and
// returns how many formed a cluster and when the last became a member.
func (l *lan) run(t *testing.T, limit time.Duration) (formed int, done time.Duration) {
	t.Helper()
	t0 := l.now
	for step := time.Duration(0); step <= limit; step += poll {
		l.now = t0.Add(step)
		beat := step%l.interval == 0
		for i, a := range l.agents {
			if a.table == nil && step >= a.start {
				a.table = discovery.NewTable("t", a.name)
				a.table.UseClock(func() time.Time { return l.now })
				a.table.Pace(l.interval, l.wait)
				a.begun, a.ip = l.now, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})
			}
		}
		if beat {
			for _, a := range l.agents {
				if a.table == nil {
					continue
				}
				state := discovery.StateSeeking
				if !a.memberAt.IsZero() && !l.now.Before(a.memberAt) {
					state = discovery.StateMember
				}
				l.send(a.name, state, a.ip)
			}
			for _, f := range l.forgers {
				if step >= f.first && (f.last == 0 || step <= f.last) {
					l.send(f.name, discovery.StateSeeking, netip.AddrFrom4([4]byte{10, 0, 66, f.host}))
				}
			}
		}
		members := 0
		for _, a := range l.agents {
			if a.table == nil {
				continue
			}
			a.table.Prune(l.now.Add(-discovery.ForgetAfter * l.interval))
			if a.decided == actWait {
				h := a.table.Peers(l.now.Add(-3 * l.interval))
				a.decided, _ = decide(a.name, h, l.now.Sub(a.begun) >= l.wait)
				switch a.decided {
				case actBootstrap:
					formed++
					a.memberAt = l.now.Add(l.form)
				case actJoin:
					a.memberAt = l.now.Add(l.form)
				}
			}
			if !a.memberAt.IsZero() && !l.now.Before(a.memberAt) {
				members++
			}
		}
		if members == len(l.agents) {
			return formed, step
		}
	}
	t.Fatalf("not every agent is a member after %v (%d formed)", limit, formed)
	return 0, 0
}

// send delivers a beacon to every agent listening but its sender.
func (l *lan) send(node, state string, from netip.Addr) {
	b, _ := json.Marshal(discovery.Beacon{V: discovery.Version, Tag: "t", Node: node,
		Addr: from.String() + ":7700", State: state})
	for _, a := range l.agents {
		if a.table != nil {
			a.table.Observe(b, from, l.now)
		}
	}
}

// Agents starting in any order and at any times form one cluster, with
// or without seekers that never form (a forger's low names, between the
// agents' names, rotating), and within a bound the forgers cannot push.
func TestBootstrapFormsOneClusterDespiteStuckSeekers(t *testing.T) {
	never := []forger(nil)
	lowest := []forger{{name: "a", first: 0}}
	three := []forger{{name: "a1"}, {name: "a2"}, {name: "a3"}}
	between := []forger{{name: "n2"}, {name: "n4"}}
	twoAddrs := []forger{{name: "a", host: 1}, {name: "n4", host: 2}}
	var rotating []forger
	for k := 0; k < 40; k++ { // a new low name every 6 s, each for 8 s
		at := time.Duration(k) * 6 * time.Second
		rotating = append(rotating, forger{name: fmt.Sprintf("a%02d", k), first: at, last: at + 8*time.Second})
	}
	rnd := rand.New(rand.NewSource(1))
	// Paces where an agent's wait outlasts a formation and the beacon
	// that tells it (as with the defaults): with a shorter wait, an agent
	// starting just after another decided to form forms too, whatever the
	// rule, for its beacons do not say it is forming.
	for _, pace := range []struct{ interval, wait, form time.Duration }{
		{time.Second, 3 * time.Second, 1500 * time.Millisecond},
		{500 * time.Millisecond, 2 * time.Second, time.Second},
	} {
		wait := pace.wait
		for _, fs := range []struct {
			name string
			f    []forger
		}{{"no forger", never}, {"lowest forged", lowest}, {"three forged", three}, {"forged between", between},
			{"two forgers", twoAddrs}, {"rotating", rotating}} {
			for trial := 0; trial < 30; trial++ {
				l := &lan{now: time.Unix(1000, 0), interval: pace.interval, wait: wait, form: pace.form, forgers: fs.f}
				for _, name := range []string{"n1", "n3", "n5"} {
					// Together, or one after another: up to 4 s apart.
					start := time.Duration(rnd.Intn(17)) * poll
					l.agents = append(l.agents, &simAgent{name: name, start: start})
				}
				formed, done := l.run(t, 2*time.Minute)
				if formed != 1 {
					t.Fatalf("wait %v, %s, trial %d: %d clusters formed", wait, fs.name, trial, formed)
				}
				// Each source of stuck seekers costs at most a grace; the
				// rotating forger's later names cost nothing.
				if bound := 4*time.Second + wait + 5*formGrace(l.interval) + l.form; done > bound {
					t.Fatalf("wait %v, %s, trial %d: everyone a member after %v, over %v", wait, fs.name, trial, done, bound)
				}
			}
		}
	}
}

// One agent alone with a forged seeker of a lower name that never forms
// forms the cluster once the forger's turn is over: wait + one grace.
func TestForgedSeekerDelaysBootstrapByOneTurn(t *testing.T) {
	l := &lan{now: time.Unix(1000, 0), interval: time.Second, wait: 3 * time.Second, form: time.Second,
		forgers: []forger{{name: "a"}}, agents: []*simAgent{{name: "n1"}}}
	formed, done := l.run(t, time.Minute)
	if want := l.wait + formGrace(l.interval) + l.form; formed != 1 || done > want+poll || done < want {
		t.Fatalf("formed %d, member after %v, want %v", formed, done, want)
	}
}
