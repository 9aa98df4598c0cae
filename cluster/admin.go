package cluster

import (
	"context"
	"time"

	"ssi/raftstore"
)

// adminLoop carries out this node's admin switches, as openMosix's
// mosctl did: bring calls this node's processes home from wherever they
// run; expel sends the guests running here back to their homes. Locked
// processes stay. A failed move is retried on the next round.
func (a *Agent) adminLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := a.member()
		if err != nil {
			continue
		}
		me, ok := s.Node(a.cfg.NodeName)
		if !ok || (!me.Admin.Bring && !me.Admin.Expel) {
			continue
		}
		for _, p := range s.Procs() {
			if p.Lock || p.State != raftstore.ProcRunning || p.Node == p.Home {
				continue
			}
			bring := me.Admin.Bring && p.Home == a.cfg.NodeName
			expel := me.Admin.Expel && p.Node == a.cfg.NodeName
			if !bring && !expel {
				continue
			}
			mctx, cancel := context.WithTimeout(ctx, migrateTimeout)
			err := a.Migrate(mctx, p.CPID, "home", 0)
			cancel()
			if err != nil {
				a.log.Debug("admin switch: moving home", "cpid", p.CPID, "err", err)
			} else {
				a.log.Info("admin switch: moved home", "cpid", p.CPID, "bring", bring, "expel", expel)
			}
		}
	}
}
