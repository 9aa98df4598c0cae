package membership

import (
	"net/netip"
	"slices"
	"time"

	"ssi/cluster/discovery"
)

// action is what an agent that is not yet a member does next.
type action int

const (
	actWait      action = iota // keep listening
	actJoin                    // join the members in targets
	actBootstrap               // form the cluster
)

// decide chooses, from the beacons of agents holding our token, between
// joining, forming the cluster and waiting. Members are joined at once.
// Otherwise, once this agent has looked for a cluster long enough
// (waited), the seeker with the smallest name forms it and the others
// wait for its member beacon: agents started together form one cluster,
// not several.
//
// A beacon proves nothing, so a seeker with a small name that never forms
// (forged, or stuck) must not hold the others back for ever: each seeker
// below us has its turn, a grace long, after the turns of those below it
// and after its own wait, and we form when the last turn below us has
// passed (formAt). Every agent computes the same turns from what it
// hears, so a seeker that is only slow to form is not passed over: it
// forms before its turn ends, and those above it hear its member beacon
// in time.
func decide(self string, h discovery.Heard, waited bool) (action, []string) {
	var members []string
	seekers := slices.Clone(h.Silent) // a seeker that went quiet keeps its turn
	smallest := true
	for _, p := range h.Peers {
		switch p.State {
		case discovery.StateMember:
			members = append(members, p.Addr)
		case discovery.StateSeeking:
			seekers = append(seekers, p)
			smallest = smallest && p.Node > self
		}
	}
	switch {
	case len(members) > 0:
		return actJoin, members
	case !waited:
		return actWait, nil
	case h.Wait <= 0 || h.Interval <= 0:
		// The table does not know the pace: wait for the smallest
		// seeker as long as it takes.
		if smallest {
			return actBootstrap, nil
		}
		return actWait, nil
	case h.Now.Before(formAt(h, self, seekers)):
		return actWait, nil
	}
	return actBootstrap, nil
}

// formGrace is a seeker's turn: how long forming takes it, from the
// moment nothing below it holds it back to its member beacon heard by
// all (opening its store, then up to two intervals for the beacon to go
// out and be heard, and the join loop's poll).
func formGrace(interval time.Duration) time.Duration {
	return 2*time.Second + 3*interval
}

// formAt is when the agent self, having heard seekers (lately or not),
// forms the cluster if no member has appeared by then.
//
// The turns go by source address, not by name: names cost nothing, so a
// forger announcing new names one after another from one address would
// otherwise put our turn off for ever. A source's place is its smallest
// name, its start the first beacon of any of its names. The k-th source
// below us forms at the latest when its own wait is over and the k-1
// below it have had their turns, a grace each, counted from the latest
// of their (and its) starts: max(starts of the first k) + wait +
// (k-1)*grace. So we form when the last source below us had its turn:
// max(starts of all k) + wait + k*grace. Every agent hears the same
// sources; one that started listening later hears the earlier ones as
// starting when it did, later than the others do: the safe side.
// (Agents sharing an address, which a LAN's agents do not, count as
// one.)
func formAt(h discovery.Heard, self string, seekers []discovery.Seen) time.Time {
	start := map[netip.Addr]time.Time{} // by source: its first beacon
	below := map[netip.Addr]bool{}      // sources with a name below self
	for _, p := range seekers {
		if s, ok := start[p.From]; !ok || p.Since.Before(s) {
			start[p.From] = p.Since
		}
		if p.Node < self {
			below[p.From] = true
		}
	}
	latest := h.Start
	for src := range below {
		if start[src].After(latest) {
			latest = start[src]
		}
	}
	return latest.Add(h.Wait + time.Duration(len(below))*formGrace(h.Interval))
}
