package telemetry

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"ssi/raftstore"
)

// Peers are the members a sample goes to.
type Peers interface {
	// Store is the agreed state, whose nodes get the samples; an error
	// (not a member yet) skips the push.
	Store() (*raftstore.Store, error)
	// Post sends body to path on the node at addr; its answer is
	// ignored: a lost sample is harmless.
	Post(ctx context.Context, addr, path string, body []byte, out any) error
}

// Pusher samples this node's load every interval, puts it in the table
// and sends it to every other node, so each node can answer `ssi nodes`
// from its own table.
type Pusher struct {
	Node     string
	Interval time.Duration
	Table    *Table
	Peers    Peers
	// Procs measures the cluster processes running here at now, by
	// cpid; nil reports none. It is called from Run's goroutine only, so
	// it may keep what it needs of the previous call (CPU times).
	Procs func(now time.Time) map[int]ProcSample
}

// Run pushes until ctx ends; the first sample goes at once.
func (p *Pusher) Run(ctx context.Context) {
	sampler := NewSampler(p.Node)
	tick := time.NewTicker(p.Interval)
	defer tick.Stop()
	for {
		now := time.Now()
		sample := sampler.Sample(now)
		if p.Procs != nil {
			sample.Procs = p.Procs(now)
		}
		p.Table.Put(sample)
		p.push(ctx, sample)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// push sends sample to every other node at once, giving them one
// interval to take it.
func (p *Pusher) push(ctx context.Context, sample Sample) {
	s, err := p.Peers.Store()
	if err != nil {
		return
	}
	body, _ := json.Marshal(sample)
	ctx, cancel := context.WithTimeout(ctx, p.Interval)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range s.Nodes() {
		if n.Name == p.Node || n.Addr == "" {
			continue
		}
		wg.Add(1)
		go func(addr string) {
			defer wg.Done()
			_ = p.Peers.Post(ctx, addr, Path, body, nil)
		}(n.Addr)
	}
	wg.Wait()
}
