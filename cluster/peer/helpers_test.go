package peer

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// member is a one-node cluster wired as the agent wires it: raft and
// the peer RPC share one authenticated cluster port, so the leader's
// address is where its handlers answer.
type member struct {
	c     *Cluster
	ca    *transport.CA // issues other nodes' certificates (as)
	s     *raftstore.Store
	mux   *transport.Mux
	addr  string
	rpc   *http.ServeMux // routes of ProtoRPC; add before the first call
	stats *countMetrics
}

func newMember(t *testing.T) *member {
	t.Helper()
	ca, err := transport.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	id, err := transport.NewIdentity(ca, "n1", []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	mux, err := transport.Listen("127.0.0.1:0", id, transport.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() }) // after the store closes
	m := &member{ca: ca, mux: mux, addr: mux.Addr().String(), rpc: http.NewServeMux(), stats: &countMetrics{}}
	m.c = New(Config{Node: "n1", Log: raftstoretest.Logger(t), Metrics: m.stats})
	m.s = raftstoretest.New(t, raftstoretest.WithNodeID("n1"), raftstoretest.WithConfig(func(cfg *raftstore.Config) {
		cfg.Addr, cfg.Layer = m.addr, mux.StreamLayer(transport.ProtoRaft)
		cfg.AskLeader = m.c.AskReadIndex
	}))
	m.c.Join(id, m.s)
	m.rpc.HandleFunc("POST "+ApplyPath, m.c.HandleApply)
	m.rpc.HandleFunc("POST "+AppliedPath, m.c.HandleApplied)
	srv := &http.Server{Handler: m.rpc, ReadHeaderTimeout: 5 * time.Second, ConnContext: api.ConnContext}
	go func() { _ = srv.Serve(mux.Listener(transport.ProtoRPC)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return m
}

// as is a client of m's cluster port presenting a certificate for node
// name, issued by the cluster's CA (another member, or a rogue one), and
// that certificate's serial.
func (m *member) as(t *testing.T, name string) (*http.Client, string) {
	t.Helper()
	id, err := transport.NewIdentity(m.ca, name, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
		return transport.Dial(ctx, addr, transport.ProtoRPC, id)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}, transport.Serial(id.Cert)
}

// countMetrics counts what the barrier reports.
type countMetrics struct {
	waits, stale atomic.Int64
}

func (m *countMetrics) BarrierWait(time.Duration) { m.waits.Add(1) }
func (m *countMetrics) StaleRead()                { m.stale.Add(1) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
