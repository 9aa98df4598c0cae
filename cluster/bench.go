package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
)

// handleRaftBench applies N admin-switch commands (this node's "stay",
// toggled) through the normal apply path, Concurrency at a time, and
// reports latency percentiles and throughput.
func (a *Agent) handleRaftBench(w http.ResponseWriter, r *http.Request) {
	var req api.BenchRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil ||
		req.N < 1 || req.N > 100000 || req.Concurrency < 1 || req.Concurrency > 256 {
		api.WriteError(w, http.StatusBadRequest, fmt.Errorf("want 1 <= n <= 100000 and 1 <= concurrency <= 256"))
		return
	}
	s, err := a.peer.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	op := func(i int) error {
		_, err := a.peer.Apply(r.Context(), raftstore.AdminSet{Node: a.cfg.NodeName, Switch: raftstore.SwitchStay, Value: i%2 == 0})
		return err
	}
	if req.Barrier {
		op = func(int) error { return s.ReadBarrier(r.Context()) }
	}
	before := s.ReadStats().Rounds
	lat, total, err := runConcurrently(req.N, req.Concurrency, op)
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	api.WriteJSON(w, http.StatusOK, api.BenchResult{
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
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	a.peer.SetBarrier(!req.Off)
	a.log.Warn("read barrier switched by root", "off", req.Off)
	api.WriteJSON(w, http.StatusOK, struct{}{})
}

// runConcurrently runs op(0..n-1), conc at a time, and returns each
// one's latency, the whole run's time and an error of one of them.
func runConcurrently(n, conc int, op func(int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	start := time.Now()
	for range conc {
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
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return lat, time.Since(start), firstErr
}
