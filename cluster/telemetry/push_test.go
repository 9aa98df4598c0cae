package telemetry

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// fakePeers records what Post would send.
type fakePeers struct {
	store *raftstore.Store

	mu    sync.Mutex // protects sent
	sent  map[string]Sample
	posts chan struct{}
}

func (f *fakePeers) Store() (*raftstore.Store, error) {
	if f.store == nil {
		return nil, api.ErrNotMember
	}
	return f.store, nil
}

func (f *fakePeers) Post(_ context.Context, addr, path string, body []byte, _ any) error {
	var s Sample
	if path != Path || json.Unmarshal(body, &s) != nil {
		panic("not a sample: " + path)
	}
	f.mu.Lock()
	f.sent[addr] = s
	f.mu.Unlock()
	f.posts <- struct{}{}
	return nil
}

// Run samples at once, puts the sample in its own table with the
// processes, and sends it to every other node that has an address.
func TestPusherSendsToOthers(t *testing.T) {
	s := raftstoretest.New(t, raftstoretest.WithNodeID("n1"))
	raftstoretest.AddNode(t, s, "n1", s.Addr())
	raftstoretest.AddNode(t, s, "n2", "127.0.0.1:2")
	raftstoretest.AddNode(t, s, "n3", "127.0.0.1:3")
	peers := &fakePeers{store: s, sent: map[string]Sample{}, posts: make(chan struct{}, 16)}
	tab := NewTable()
	p := &Pusher{Node: "n1", Interval: time.Hour, Table: tab, Peers: peers,
		Procs: func(time.Time) map[int]ProcSample { return map[int]ProcSample{7: {Pid: 42}} }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	for range 2 {
		<-peers.posts
	}
	cancel()
	<-done

	own, ok := tab.Get("n1")
	if !ok || own.Procs[7].Pid != 42 || own.CPUs == 0 {
		t.Fatalf("own sample %+v, %v", own, ok)
	}
	peers.mu.Lock()
	defer peers.mu.Unlock()
	if len(peers.sent) != 2 || peers.sent["127.0.0.1:2"].Node != "n1" || peers.sent["127.0.0.1:3"].Procs[7].Pid != 42 {
		t.Fatalf("sent %+v", peers.sent)
	}
}

// Before this node is a member it keeps its samples to itself.
func TestPusherBeforeJoin(t *testing.T) {
	tab := NewTable()
	peers := &fakePeers{sent: map[string]Sample{}, posts: make(chan struct{}, 16)}
	p := &Pusher{Node: "n1", Interval: time.Hour, Table: tab, Peers: peers}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	p.Run(ctx) // one round, then it sees ctx ended
	if _, ok := tab.Get("n1"); !ok {
		t.Fatal("no own sample")
	}
	if len(peers.posts) != 0 {
		t.Fatal("pushed before joining")
	}
}
