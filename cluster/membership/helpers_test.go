package membership

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/telemetry"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// fakeCluster is a one-node cluster whose peers are this test: Post
// serves the request with routes in process, as the leader would.
type fakeCluster struct {
	s      *raftstore.Store // nil: not a member yet
	routes *http.ServeMux
}

func (f *fakeCluster) Store() (*raftstore.Store, error) {
	if f.s == nil {
		return nil, api.ErrNotMember
	}
	return f.s, nil
}

func (f *fakeCluster) Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error) {
	return raftstoretest.Local{S: f.s}.Apply(ctx, cmd)
}

func (f *fakeCluster) Forward(context.Context, string, any, any) error {
	return errors.New("the test's only node leads: nothing to forward")
}

// Post is this node's (n1's) request.
func (f *fakeCluster) Post(ctx context.Context, _, path string, body []byte, out any) error {
	return f.postAs(ctx, "n1", path, body, out)
}

// postAs serves a request of node name, as the cluster port would: its
// connection shows name's certificate. The answer goes into out unless
// it is nil.
func (f *fakeCluster) postAs(ctx context.Context, name, path string, body []byte, out any) error {
	rec := httptest.NewRecorder()
	ctx = api.ConnContext(ctx, certConn{leaf: &x509.Certificate{Subject: pkix.Name{CommonName: name},
		SerialNumber: big.NewInt(int64(len(name)))}})
	f.routes.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return api.ReadError(rec.Result())
	}
	if out != nil {
		return json.NewDecoder(rec.Body).Decode(out)
	}
	return nil
}

// certConn is a connection whose peer presented leaf.
type certConn struct {
	net.Conn
	leaf *x509.Certificate
}

func (c certConn) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.leaf}}
}

// leading returns node n1's membership, leading a one-node cluster
// that keeps one voter; no node is registered yet.
func leading(t *testing.T, cfg Config) (*Membership, *fakeCluster, *telemetry.Table) {
	t.Helper()
	s := raftstoretest.New(t, raftstoretest.WithNodeID("n1"))
	fc := &fakeCluster{s: s, routes: http.NewServeMux()}
	tel := telemetry.NewTable()
	cfg.Node, cfg.Advertise, cfg.Voters, cfg.Log = "n1", s.Addr(), 1, raftstoretest.Logger(t)
	if cfg.TelemetryInterval == 0 {
		cfg.TelemetryInterval = time.Second
	}
	m := New(cfg, fc, tel)
	fc.routes.HandleFunc("POST "+JoinPath, m.HandleJoin)
	return m, fc, tel
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register posts node name's registration to the leader, as name.
func register(t *testing.T, fc *fakeCluster, name, addr string) {
	t.Helper()
	body, _ := json.Marshal(joinRequest{Name: name, Addr: addr, CPUs: 2, Memory: 1 << 30})
	if err := fc.postAs(testContext(t), name, JoinPath, body, nil); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
}
