package membership

import (
	"net"
	"testing"

	"ssi/cluster/discovery"
	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// Alone (no seeds, no discovery) a node forms its cluster; it comes back
// with the same identity.
func TestFormThenComeBack(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Node: "n1", Advertise: "127.0.0.1:7700", DataDir: dir}
	id, formed, err := New(cfg, &fakeCluster{}, telemetry.NewTable()).ObtainIdentity(testContext(t))
	if err != nil || !formed || id.Name() != "n1" || id.ClusterID() == "" {
		t.Fatalf("formed %v, %v: %v", formed, err, id)
	}
	again, formed, err := New(cfg, &fakeCluster{}, telemetry.NewTable()).ObtainIdentity(testContext(t))
	if err != nil || formed || again.ClusterID() != id.ClusterID() {
		t.Fatalf("came back with %q, formed %v, %v; want %q", again.ClusterID(), formed, err, id.ClusterID())
	}
}

// A newcomer with the token joins through a seed: the member's join
// handler checks the token against the state and admits it.
func TestJoinThroughSeed(t *testing.T) {
	tok, err := transport.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	// The member: a formed cluster whose state holds the token.
	leader, fc, _ := leading(t, Config{DataDir: t.TempDir(), JoinToken: tok})
	mid, formed, err := leader.ObtainIdentity(testContext(t))
	if err != nil || !formed {
		t.Fatal(formed, err)
	}
	raftstoretest.Apply(t, fc.s, raftstore.TokenAdd{Hash: transport.TokenHash(tok)})
	mux, err := transport.Listen("127.0.0.1:0", mid, transport.Options{Join: leader.JoinHandler()})
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()

	cfg := Config{Node: "n2", Advertise: "127.0.0.1:7701", DataDir: t.TempDir(), JoinToken: tok, Join: []string{mux.Addr().String()}}
	m := New(cfg, &fakeCluster{}, telemetry.NewTable())
	if b := m.Beacon(); b.State != discovery.StateSeeking || b.Tag != transport.TokenTag(tok) || b.Addr != cfg.Advertise {
		t.Fatalf("beacon %+v", b)
	}
	id, formed, err := m.ObtainIdentity(testContext(t))
	if err != nil || formed || id.Name() != "n2" || id.ClusterID() != mid.ClusterID() {
		t.Fatalf("joined %v, formed %v, %v", id, formed, err)
	}
	if !id.Cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("certificate for %v, want the advertised address", id.Cert.IPAddresses)
	}
	if m.joinedVia != mux.Addr().String() {
		t.Fatalf("joined via %q", m.joinedVia)
	}
}

func TestAdvertiseIP(t *testing.T) {
	if ip, err := AdvertiseIP("10.1.2.3"); err != nil || ip != "10.1.2.3" {
		t.Fatalf("configured: %q, %v", ip, err)
	}
	if ip, err := AdvertiseIP(""); err != nil || net.ParseIP(ip) == nil {
		t.Fatalf("picked %q, %v", ip, err)
	}
}
