package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"ssi/raftstore"
)

// BenchRequest asks the agent to measure Raft applies.
type BenchRequest struct {
	N           int `json:"n"`
	Concurrency int `json:"concurrency"`
	// Barrier measures read barriers (the linearizable read's round
	// trip) instead of applies.
	Barrier bool `json:"barrier,omitempty"`
}

// BenchResult is what one run measured, from this node: commands forwarded
// to the leader when this node follows.
type BenchResult struct {
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	PerSecond   float64 `json:"per_second"`
	// Rounds is how many barrier round trips served the N barriers.
	Rounds uint64 `json:"rounds,omitempty"`
}

// RaftBench runs a benchmark on the local agent.
func (c *Client) RaftBench(ctx context.Context, req BenchRequest) (*BenchResult, error) {
	var out BenchResult
	return &out, c.call(ctx, http.MethodPost, "/v1/debug/raftbench", req, &out)
}

// handleRaftBench applies N admin-switch commands (this node's "stay",
// toggled) through the normal apply path, Concurrency at a time, and
// reports latency percentiles and throughput.
func (a *Agent) handleRaftBench(w http.ResponseWriter, r *http.Request) {
	var req BenchRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil ||
		req.N < 1 || req.N > 100000 || req.Concurrency < 1 || req.Concurrency > 256 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("want 1 <= n <= 100000 and 1 <= concurrency <= 256"))
		return
	}
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	op := func(i int) error {
		_, err := a.apply(r.Context(), raftstore.AdminSet{Node: a.cfg.NodeName, Switch: raftstore.SwitchStay, Value: i%2 == 0})
		return err
	}
	if req.Barrier {
		op = func(int) error { return s.ReadBarrier(r.Context()) }
	}
	before := s.ReadStats().Rounds
	lat := make([]time.Duration, req.N)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range req.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				err := op(i)
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := range req.N {
		next <- i
	}
	close(next)
	wg.Wait()
	total := time.Since(start)
	if firstErr != nil {
		writeErr(w, http.StatusServiceUnavailable, firstErr)
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	writeJSON(w, http.StatusOK, BenchResult{
		N: req.N, Concurrency: req.Concurrency,
		P50ms: ms(lat[req.N/2]), P99ms: ms(lat[req.N*99/100]),
		PerSecond: float64(req.N) / total.Seconds(),
		Rounds:    s.ReadStats().Rounds - before,
	})
}

// handleBarrierSwitch turns the read barrier off or on, for the bench's
// baseline only: without it reads may be stale (root only, not a
// configuration key, and never on by itself).
func (a *Agent) handleBarrierSwitch(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Off bool `json:"off"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.noBarrier.Store(req.Off)
	a.log.Warn("read barrier switched by root", "off", req.Off)
	writeJSON(w, http.StatusOK, struct{}{})
}

// SetReadBarrier turns the local agent's read barrier on or off (bench).
func (c *Client) SetReadBarrier(ctx context.Context, on bool) error {
	return c.call(ctx, http.MethodPost, "/v1/debug/barrier", map[string]bool{"off": !on}, nil)
}
