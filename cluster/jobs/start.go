package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/cluster/stdio"
	"ssi/raftstore"
)

// HandleStart is the chosen node's side of a placed start (see
// "Placement at start" in place.go), a peer handler: the asking node is
// the one its certificate names, never one the request names. 503 asks
// the home to ask again; any other refusal is final, and nothing was
// started.
func (t *Table) HandleStart(w http.ResponseWriter, r *http.Request) {
	from, serial := peer.Caller(api.ConnOf(r))
	var sr StartRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRunBody+64<<10)).Decode(&sr); err != nil {
		api.WriteError(w, http.StatusBadRequest, fmt.Errorf("a start request: %w", err))
		return
	}
	if err := checkRun(sr.Run); err != nil {
		answer(w, http.StatusBadRequest, err)
		return
	}
	// Asked before adoption is done: Adopt must not take the listing
	// for one of a process that died with the last agent.
	switch t.asked.begin(sr.CPID) {
	case askStarted:
		api.WriteJSON(w, http.StatusOK, struct{}{})
		return
	case askUnderWay:
		api.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("a start of process %d is under way", sr.CPID))
		return
	}
	started := false
	defer func() { t.asked.end(sr.CPID, started) }()
	if err := t.WaitAdoption(r.Context()); err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	// The listing the home made must be seen here before it is checked.
	if err := t.c.CatchUp(r.Context()); err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	s, err := t.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if err := mayStart(s, t.cfg.Node, from, serial, sr); err != nil {
		t.log.Warn("refusing a start", "cpid", sr.CPID, "home", from, "err", err)
		api.WriteError(w, http.StatusConflict, err)
		return
	}
	pauseAt(t.cfg.PauseStart)
	l := &launch{req: sr.Run, caller: caller{uid: sr.UID, gid: sr.GID, Caller: sr.Caller}}
	if status, err := l.start(t.cfg.DataDir); err != nil {
		api.WriteError(w, status, err)
		return
	}
	j := &Job{cpid: sr.CPID, proc: l.cmd.Process}
	if sr.Run.Attach {
		j.hold = stdio.NewHolder(sr.CPID, from, j.Pid, l.ours, nil, t.dial, t.log)
		j.hold.Start()
	}
	// Recorded, then let run: a next agent finds it (see Adopt).
	t.add(j)
	l.letRun(t.cg, t.log, sr.CPID)
	started = true
	t.log.Info("started a process for its home", "cpid", sr.CPID, "home", from, "pid", j.Pid())
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

// mayStart says why node me must not start sr for node from (nil if it
// may): the home must be a member, the agreed state must list the
// process here, homed on from and owned by the uid asked for (any uid
// from's users have, root too: a home vouches for its own users,
// peer.EffectiveUID), and this node must take new processes.
func mayStart(s *raftstore.Store, me, from, serial string, sr StartRequest) error {
	if err := peer.CheckMember(s, from, serial); err != nil {
		return err
	}
	p, ok := s.Proc(sr.CPID)
	node, _ := s.Node(me)
	_, moving := s.Migration(sr.CPID)
	switch {
	case !ok:
		return fmt.Errorf("process %d is not listed", sr.CPID)
	case p.Home != from:
		return fmt.Errorf("process %d is homed on %s, not on %s", sr.CPID, p.Home, from)
	case p.Node != me || moving:
		return fmt.Errorf("process %d is listed on %s, not here", sr.CPID, p.Node)
	case p.UID != int(sr.UID):
		return fmt.Errorf("process %d is uid %d's, not uid %d's", sr.CPID, p.UID, sr.UID)
	case node.Admin.Block:
		return fmt.Errorf("%s refuses new processes (block)", me)
	}
	return nil
}

// askState is where a start asked of this node stands.
type askState int

const (
	askFirst    askState = iota // not asked before: the caller starts it
	askUnderWay                 // another ask of it is being served
	askStarted                  // started already: a repeat of an ask whose answer was lost
)

// keepStarted is how long a node remembers the cpids it started for
// their homes: well past the last repeat a home may ask (askFor).
const keepStarted = 10 * time.Minute

// pending are the starts asked of this node: a cpid is started at most
// once, however often its home asks.
type pending struct {
	mu sync.Mutex        // protects m
	m  map[int]time.Time // cpid -> zero while under way, else when it started
}

// begin registers an ask of cpid; askFirst must be followed by end.
func (p *pending) begin(cpid int) askState {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[int]time.Time{}
	}
	for c, at := range p.m {
		if !at.IsZero() && time.Since(at) > keepStarted {
			delete(p.m, c)
		}
	}
	at, ok := p.m[cpid]
	switch {
	case !ok:
		p.m[cpid] = time.Time{}
		return askFirst
	case at.IsZero():
		return askUnderWay
	}
	return askStarted
}

// has reports whether a start of cpid is under way or was made.
func (p *pending) has(cpid int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.m[cpid]
	return ok
}

// end closes the ask begin let through: started, or not (a new ask may
// try again).
func (p *pending) end(cpid int, started bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if started {
		p.m[cpid] = time.Now()
	} else {
		delete(p.m, cpid)
	}
}

// pauseAt is the PauseStart failure point at path ("": none).
func pauseAt(path string) {
	if path == "" {
		return
	}
	_ = os.WriteFile(path+".paused", nil, 0o600)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return
		}
	}
}

// sweepEvery is how often a node looks for listings nothing of it
// accounts for; sweepAfter is how long one must have been so before it
// is forgotten: far longer than a start takes from its listing to its
// job (HandleRun, HandleStart) or an end from its job to its removal.
var sweepEvery, sweepAfter = 10 * time.Second, 30 * time.Second

// SweepUnstarted forgets the processes the agreed state lists on t's
// node that nothing here runs, records or is starting, once they have
// been so for sweepAfter: a home that died between listing a process
// here and asking for its start (see place.go) leaves such a listing.
// It runs, once this node's processes are adopted, until ctx ends.
func SweepUnstarted(ctx context.Context, t *Table) {
	if t.WaitAdoption(ctx) != nil {
		return
	}
	missing := map[int]time.Time{} // cpid -> since when nothing accounts for it
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := t.c.Store()
		if err != nil {
			continue
		}
		now, seen := time.Now(), map[int]bool{}
		for _, p := range s.Procs() {
			if !unaccounted(t, s, p.CPID) {
				continue
			}
			seen[p.CPID] = true
			if since, ok := missing[p.CPID]; !ok {
				missing[p.CPID] = now
			} else if now.Sub(since) >= sweepAfter {
				forgetUnstarted(ctx, t, p.CPID)
			}
		}
		for c := range missing {
			if !seen[c] {
				delete(missing, c)
			}
		}
	}
}

// unaccounted reports whether s lists cpid on t's node, not moving, and
// t neither runs it nor has a record of it.
func unaccounted(t *Table, s *raftstore.Store, cpid int) bool {
	p, ok := s.Proc(cpid)
	if _, moving := s.Migration(cpid); !ok || moving || p.Node != t.cfg.Node || p.State == raftstore.ProcMigrating {
		return false
	}
	if _, ok := t.Get(cpid); ok {
		return false
	}
	_, err := t.rec.read(cpid)
	return err != nil
}

// forgetUnstarted removes the listing of cpid, unless a start of it is
// asked meanwhile (which then finds it gone and refuses) or, past the
// read barrier, something accounts for it after all.
func forgetUnstarted(ctx context.Context, t *Table, cpid int) {
	if t.asked.begin(cpid) != askFirst {
		return
	}
	defer t.asked.end(cpid, false)
	if err := t.c.CatchUp(ctx); err != nil {
		return
	}
	s, err := t.c.Store()
	if err != nil || !unaccounted(t, s, cpid) {
		return
	}
	t.log.Warn("forgetting a process listed here that was never started", "cpid", cpid)
	if _, err := t.c.Apply(ctx, raftstore.ProcRemove{CPID: cpid, EndedAt: time.Now()}); err != nil {
		t.log.Warn("forgetting a process listed here", "cpid", cpid, "err", err)
	}
}
