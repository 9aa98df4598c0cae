package membership

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

func (f *fakeCluster) Post(ctx context.Context, _, path string, body []byte, _ any) error {
	rec := httptest.NewRecorder()
	f.routes.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return api.ReadError(rec.Result())
	}
	return nil
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

// register posts node name's registration to the leader.
func register(t *testing.T, fc *fakeCluster, name, addr string) {
	t.Helper()
	body, _ := json.Marshal(joinRequest{Name: name, Addr: addr, CPUs: 2, Memory: 1 << 30})
	if err := fc.Post(testContext(t), addr, JoinPath, body, nil); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
}
