package raftstore

import "sync"

// leaderWatch turns raft's single leadership channel into any number of
// subscriptions, each seeing the latest value: a slow subscriber misses
// intermediate flips, never the final state.
type leaderWatch struct {
	mu       sync.Mutex
	isLeader bool
	subs     map[int]chan bool
	next     int
	stopped  bool // no more subscriptions: the store is closed
	done     chan struct{}
}

func newLeaderWatch(raftCh <-chan bool, closed <-chan struct{}) *leaderWatch {
	w := &leaderWatch{subs: map[int]chan bool{}, done: make(chan struct{})}
	go w.run(raftCh, closed)
	return w
}

func (w *leaderWatch) run(raftCh <-chan bool, closed <-chan struct{}) {
	defer close(w.done)
	for {
		select {
		case v := <-raftCh:
			w.publish(v)
		case <-closed:
			w.publish(false)
			w.mu.Lock()
			w.stopped = true
			for id, ch := range w.subs {
				close(ch)
				delete(w.subs, id)
			}
			w.mu.Unlock()
			return
		}
	}
}

func (w *leaderWatch) publish(v bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v == w.isLeader {
		return
	}
	w.isLeader = v
	for _, ch := range w.subs {
		offer(ch, v)
	}
}

// offer replaces whatever ch holds with v; only publish and subscribe
// send, under w.mu, so the send after the drain cannot block.
func offer(ch chan bool, v bool) {
	select {
	case <-ch:
	default:
	}
	ch <- v
}

func (w *leaderWatch) subscribe() (<-chan bool, func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan bool, 1)
	if w.stopped {
		close(ch)
		return ch, func() {}
	}
	id := w.next
	w.next++
	w.subs[id] = ch
	ch <- w.isLeader
	return ch, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.subs[id]; ok {
			delete(w.subs, id)
			close(ch)
		}
	}
}

// wait returns once the watcher goroutine has ended.
func (w *leaderWatch) wait() { <-w.done }

// LeaderChanges subscribes to this node's leadership: the channel first
// holds the current value, then each change (true: this node became the
// leader; false: it lost leadership). Values are coalesced, so a slow
// reader sees the latest state rather than every flip. The channel is
// closed by stop and when the store closes; run leader-only loops while
// the last value received is true.
func (m *members) LeaderChanges() (ch <-chan bool, stop func()) {
	return m.leader.subscribe()
}
