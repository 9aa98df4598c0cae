package migration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/fs"
)

// `ssi migrate` acts as its caller, whom the socket names: a uid the
// request claims counts for nothing. As root the claim of another user
// must not stop the move; as anyone else the claim of the owner must not
// let it through.
func TestLocalRequestIsTheSocketsUser(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	cpid := h.startJob("node1")
	me := uint32(os.Getuid())
	claim, want := uint32(owner), fs.ErrPermission
	if me == 0 || me == owner {
		claim, want = owner+1, nil
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/migrate", h.node("node1").mover.HandleLocal)
	srv := &http.Server{Handler: mux, ConnContext: api.ConnContext}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	// "home" while at home: nothing to do once the caller may ask.
	body, _ := json.Marshal(api.MigrateRequest{CPID: cpid, Target: "home", UID: claim})
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	resp, err := client.Post("http://agent/v1/migrate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got error
	if resp.StatusCode != http.StatusOK {
		got = api.ReadError(resp)
	}
	if want == nil && got != nil || want != nil && !errors.Is(got, want) {
		t.Fatalf("uid %d claiming %d: %v, want %v", me, claim, got, want)
	}
	h.expectCopies("node1:runs")
}
