package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// A peer's failure comes back as the error it was; 421 and 503 (not the
// leader, not a member yet) and an unreachable peer are worth retrying.
func TestPostErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write func(w http.ResponseWriter)
		retry bool
		kind  error
		text  string
	}{
		{"not the leader", func(w http.ResponseWriter) {
			api.WriteError(w, http.StatusMisdirectedRequest, raftstore.ErrNotLeader)
		}, true, nil, ""},
		{"not a member", func(w http.ResponseWriter) {
			api.WriteError(w, http.StatusServiceUnavailable, api.ErrNotMember)
		}, true, nil, ""},
		{"errno", func(w http.ResponseWriter) {
			api.WriteErrno(w, fmt.Errorf("%w: process 7 is migrating", fs.ErrBusy))
		}, false, fs.ErrBusy, fs.ErrBusy.Error() + ": process 7 is migrating"},
		{"store kind", func(w http.ResponseWriter) {
			api.WriteError(w, http.StatusConflict, raftstore.ErrNotFound)
		}, false, raftstore.ErrNotFound, ""},
		{"no body", func(w http.ResponseWriter) { w.WriteHeader(http.StatusBadRequest) }, false, nil, "400 Bad Request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { tc.write(w) }))
			defer srv.Close()
			addr := strings.TrimPrefix(srv.URL, "http://")
			err := postWith(t.Context(), srv.Client(), addr, "/v1/x", []byte("{}"), nil)
			if err == nil || errors.Is(err, api.ErrRetry) != tc.retry {
				t.Fatalf("error %v, retry want %v", err, tc.retry)
			}
			if tc.retry && !strings.HasPrefix(err.Error(), "retry: "+addr+": ") {
				t.Fatalf("a retry does not name the peer: %v", err)
			}
			if (tc.kind != nil && !errors.Is(err, tc.kind)) || (tc.text != "" && err.Error() != tc.text) {
				t.Fatalf("error %q, want %v %q", err, tc.kind, tc.text)
			}
		})
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	if err := postWith(t.Context(), http.DefaultClient, addr, "/v1/x", nil, nil); !errors.Is(err, api.ErrRetry) {
		t.Fatalf("an unreachable peer: %v", err)
	}
}

// Post, PostLong and Forward reach the leader's handlers over the
// authenticated cluster port; the handler sees who asks.
func TestPostOverClusterPort(t *testing.T) {
	m := newMember(t)
	m.rpc.HandleFunc("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]int
		_ = json.NewDecoder(r.Body).Decode(&in)
		in["from "+transport.PeerName(api.ConnOf(r))]++
		api.WriteJSON(w, http.StatusOK, in)
	})
	ctx := testContext(t)
	var idx struct {
		Index uint64 `json:"index"`
	}
	if err := m.c.Post(ctx, m.addr, AppliedPath, []byte("{}"), &idx); err != nil || idx.Index == 0 {
		t.Fatalf("applied: %+v, %v", idx, err)
	}
	var out map[string]int
	if err := m.c.Forward(ctx, "/v1/echo", map[string]int{"a": 1}, &out); err != nil || out["a"] != 1 || out["from n1"] != 1 {
		t.Fatalf("forward: %v, %v", out, err)
	}
	if err := m.c.PostLong(ctx, m.addr, "/v1/echo", []byte(`{"b":2}`), &out); err != nil || out["b"] != 2 {
		t.Fatalf("post long: %v, %v", out, err)
	}
}

// The leader applies a forwarded command and sends back its result; a
// command it cannot decode is refused, and not retried.
func TestHandleApply(t *testing.T) {
	m := newMember(t)
	ctx := testContext(t)
	b, err := raftstore.EncodeCommand(raftstore.NodeUpsert{Name: "n1", Addr: m.addr, State: raftstore.NodeUp,
		CPUs: 3, JoinedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	var out applyResult
	if err := m.c.Post(ctx, m.addr, ApplyPath, b, &out); err != nil || !json.Valid(out.Result) {
		t.Fatalf("apply: %s, %v", out.Result, err)
	}
	if n, ok := m.s.Node("n1"); !ok || n.CPUs != 3 {
		t.Fatal("the command was not applied")
	}
	err = m.c.Post(ctx, m.addr, ApplyPath, []byte("garbage"), nil)
	if err == nil || errors.Is(err, api.ErrRetry) {
		t.Fatalf("garbage: %v", err)
	}
}

// Before Join the handlers send the asker elsewhere.
func TestHandlersNotMemberYet(t *testing.T) {
	c := New(Config{Node: "n1"})
	for path, tc := range map[string]struct {
		h    http.HandlerFunc
		code int
	}{ApplyPath: {c.HandleApply, http.StatusServiceUnavailable}, AppliedPath: {c.HandleApplied, http.StatusMisdirectedRequest}} {
		rec := httptest.NewRecorder()
		tc.h(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader("{}")))
		if rec.Code != tc.code {
			t.Errorf("%s: %d, want %d", path, rec.Code, tc.code)
		}
	}
}
