package raftstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"ssi/raftstore/internal/testutil"
)

// askVia makes a cluster's followers ask whichever node leads, as the
// agent's RPC does, retrying while the leader changes.
func askVia(c **testCluster) func(*Config) {
	return func(cfg *Config) {
		cfg.AskLeader = func(ctx context.Context) (uint64, error) {
			for {
				for _, nd := range (*c).running() {
					if nd.store.IsLeader() {
						if idx, err := nd.store.ReadIndex(ctx); err == nil {
							return idx, nil
						}
					}
				}
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
		}
	}
}

// TestReadBarrierSeesEveryAcknowledgedWrite: a follower that passes the
// barrier after a write returned on the leader always reads it, while
// without the barrier a follower can lag (the reason the barrier exists).
func TestReadBarrierSeesEveryAcknowledgedWrite(t *testing.T) {
	var c *testCluster
	c = newCluster(t, 3, askVia(&c))
	leader := c.leader()
	stale := 0
	for i := range 200 {
		name := fmt.Sprintf("w%d", i)
		if _, err := leader.store.Apply(testutil.Context(t), NodeUpsert{Name: name, Addr: "10.0.0.9:7000", CPUs: 1, JoinedAt: t0}); err != nil {
			t.Fatal(err)
		}
		f := c.followers()[i%2]
		if _, ok := f.store.Node(name); !ok {
			stale++ // the plain local read, for the record
		}
		if err := f.store.ReadBarrier(testutil.Context(t)); err != nil {
			t.Fatalf("barrier on %s: %v", f.id, err)
		}
		if _, ok := f.store.Node(name); !ok {
			t.Fatalf("%s passed the barrier after %s was acknowledged but does not have it", f.id, name)
		}
	}
	t.Logf("plain follower reads that lagged: %d of 200", stale)
}

// TestReadIndexSharesRounds: many concurrent barriers cost a few rounds.
func TestReadIndexSharesRounds(t *testing.T) {
	var c *testCluster
	c = newCluster(t, 3, askVia(&c))
	f := c.followers()[0]
	before := f.store.ReadStats()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.store.ReadBarrier(testutil.Context(t)) != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	after := f.store.ReadStats()
	callers, rounds := after.Callers-before.Callers, after.Rounds-before.Rounds
	if failed.Load() != 0 || callers != 100 {
		t.Fatalf("%d of %d barriers failed", failed.Load(), callers)
	}
	if rounds == 0 || rounds > 20 {
		t.Fatalf("100 concurrent barriers took %d rounds, want a few", rounds)
	}
	t.Logf("100 concurrent barriers: %d rounds", rounds)
}

// TestReadIndexAfterLeaderChange: a new leader's read index covers what
// the old leader acknowledged, and a node that no longer leads refuses.
func TestReadIndexAfterLeaderChange(t *testing.T) {
	var c *testCluster
	c = newCluster(t, 3, askVia(&c))
	old := c.leader()
	res, err := old.store.Apply(testutil.Context(t), NodeUpsert{Name: "before", Addr: "10.0.0.9:7000", CPUs: 1, JoinedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	c.stop(old)
	nl := c.leader()
	idx, err := nl.store.ReadIndex(testutil.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if idx < res.Index {
		t.Fatalf("new leader's read index %d is below the acknowledged write at %d", idx, res.Index)
	}
	for _, f := range c.followers() {
		if err := f.store.ReadBarrier(testutil.Context(t)); err != nil {
			t.Fatal(err)
		}
		if _, ok := f.store.Node("before"); !ok {
			t.Fatalf("%s lacks the write the old leader acknowledged", f.id)
		}
	}
}

// TestReadIndexWithoutQuorum: a leader cut off from its quorum cannot
// prove it leads: the barrier fails within the caller's deadline.
func TestReadIndexWithoutQuorum(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()
	for _, f := range c.followers() {
		c.stop(f)
	}
	// A heartbeat answered just before the followers stopped may still
	// count for the first round (raft's VerifyLeader takes any success
	// reported after it was asked, and the reply can be in flight): that
	// ack is younger than an election timeout, so no other leader can
	// exist yet. The next round has no such ack.
	first, cancel0 := context.WithTimeout(context.Background(), 2*time.Second)
	_, _ = leader.store.ReadIndex(first)
	cancel0()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err := leader.store.ReadIndex(ctx)
	if err == nil {
		t.Fatal("a leader without quorum served a read index")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the barrier took %v past its deadline", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrLeadershipLost) {
		t.Logf("error: %v", err)
	}
}
