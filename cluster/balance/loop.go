package balance

import (
	"context"
	"log/slog"
	"time"
)

// Mover carries decisions out (a *migration.Mover).
type Mover interface {
	// Rebalance moves a process running here, reserving the
	// destination.
	Rebalance(ctx context.Context, cpid int, to string) error
	// Migrate is a move as root of this node (the admin switches').
	Migrate(ctx context.Context, cpid int, target string, uid uint32) error
}

// Loop is one node's balancer: every Interval it carries out the node's
// admin switches (bring, expel), then plans the moves of the processes
// running on Node and carries them out one by one. Each
// node plans only for its own processes (openMosix's way: the node
// that feels the load sends work away), so no node waits for another to
// decide, and the agreed state coordinates them: a move reserves its
// destination (Mover), and every plan counts the moves under way.
type Loop struct {
	Node     string
	Interval time.Duration
	Policy   Config
	// Agreed is the agreed state now (an error: not a member yet).
	Agreed  func() (Agreed, error)
	Samples Samples
	Mover   Mover
	Log     *slog.Logger
	// SetBlock sets this node's block switch (ssi drain).
	SetBlock func(ctx context.Context, on bool) error
	// Off leaves automatic moves out (balance.enabled false): the admin
	// switches still act.
	Off bool

	journal journal
}

// Run balances until ctx ends. A round that moved something is followed
// at once by the next: its plan sees the move in the agreed state.
func (l *Loop) Run(ctx context.Context) {
	timer := time.NewTimer(l.Interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next := l.Interval
		if l.Round(ctx) {
			next = 0
		}
		timer.Reset(next)
	}
}

// Round plans once and carries out the first move (the others are
// planned again next round, on fresh loads); it says whether a process
// moved.
func (l *Loop) Round(ctx context.Context) bool {
	a, err := l.Agreed()
	if err != nil {
		return false
	}
	l.adminRound(ctx, a)
	if l.Off {
		return false
	}
	now := time.Now()
	nodes, procs := Snapshot(l.Node, a, l.Samples, now)
	decisions, rejected := Plan(nodes, l.Node, procs, l.Policy)
	var rs []Record
	for _, r := range rejected {
		rs = append(rs, Record{At: now, Node: l.Node, CPID: r.CPID, UID: r.UID, Action: "rejected", From: r.Node, Why: r.Why})
	}
	l.journal.considered(rs)
	if len(decisions) == 0 {
		return false
	}
	d := decisions[0]
	rec := Record{At: now, Node: l.Node, CPID: d.CPID, UID: d.UID, Action: "moved", Kind: d.Kind, From: d.From, To: d.To, Why: d.Why}
	if err := l.Mover.Rebalance(ctx, d.CPID, d.To); err != nil {
		rec.Action, rec.Err = "failed", err.Error()
		l.Log.Info("balance: move failed", "cpid", d.CPID, "from", d.From, "to", d.To, "kind", d.Kind, "why", d.Why, "err", err)
		l.journal.moved(rec)
		return false
	}
	l.Log.Info("balance: moved", "cpid", d.CPID, "from", d.From, "to", d.To, "kind", d.Kind, "why", d.Why)
	l.journal.moved(rec)
	return true
}

// Records are this node's recent moves and standing rejections.
func (l *Loop) Records() []Record { return l.journal.records() }
