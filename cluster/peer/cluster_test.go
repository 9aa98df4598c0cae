package peer

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// Before Join everything that needs the cluster says so.
func TestNotMemberYet(t *testing.T) {
	c := New(Config{Node: "n1"})
	ctx := testContext(t)
	if _, err := c.Store(); !errors.Is(err, api.ErrNotMember) {
		t.Fatalf("Store: %v", err)
	}
	if c.Identity() != nil || c.Name() != "n1" {
		t.Fatal("identity before joining")
	}
	_, errApply := c.Apply(ctx, raftstore.TokenAdd{Hash: "h"})
	_, errIdx := c.AskReadIndex(ctx)
	_, errFresh := c.Fresh(ctx)
	_, errAddr := c.NodeAddr("n2")
	_, errDial := c.Dial(ctx, "n2", transport.ProtoMigrate)
	for name, err := range map[string]error{
		"Apply": errApply, "AskReadIndex": errIdx, "Fresh": errFresh, "NodeAddr": errAddr, "Dial": errDial,
		"Forward": c.Forward(ctx, "/v1/join", struct{}{}, nil), "CatchUp": c.CatchUp(ctx),
		"Post":     c.Post(ctx, "127.0.0.1:1", "/v1/x", nil, nil),
		"PostLong": c.PostLong(ctx, "127.0.0.1:1", "/v1/x", nil, nil),
	} {
		if !errors.Is(err, api.ErrNotMember) {
			t.Errorf("%s: %v, want ErrNotMember", name, err)
		}
	}
}

// On the leader Apply applies here and state errors come back as such.
func TestApplyOnLeader(t *testing.T) {
	m := newMember(t)
	ctx := testContext(t)
	raw, err := m.c.Apply(ctx, raftstore.NodeUpsert{Name: "n1", Addr: m.addr, State: raftstore.NodeUp, CPUs: 1, JoinedAt: time.Now()})
	if err != nil || !json.Valid(raw) {
		t.Fatalf("apply: %s, %v", raw, err)
	}
	if addr, err := m.c.NodeAddr("n1"); err != nil || addr != m.addr {
		t.Fatalf("NodeAddr = %q, %v", addr, err)
	}
	if _, err := m.c.NodeAddr("n9"); err == nil {
		t.Fatal("an unknown node has an address")
	}
	if _, err := m.c.Apply(ctx, raftstore.ProcAdd{Home: "nowhere"}); !errors.Is(err, raftstore.ErrNotFound) {
		t.Fatalf("proc add on an unknown home: %v", err)
	}
}

// Dial reaches a node by name on the cluster port, as this node.
func TestDial(t *testing.T) {
	m := newMember(t)
	ctx := testContext(t)
	if _, err := m.c.Apply(ctx, raftstore.NodeUpsert{Name: "n1", Addr: m.addr, State: raftstore.NodeUp, JoinedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ln := m.mux.Listener(transport.ProtoMigrate)
	accepted := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err.Error()
			return
		}
		defer c.Close()
		b := make([]byte, 2)
		_, _ = c.Read(b)
		accepted <- transport.PeerName(c) + " " + string(b)
	}()
	conn, err := m.c.Dial(ctx, "n1", transport.ProtoMigrate)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := <-accepted; got != "n1 hi" {
		t.Fatalf("the listener got %q", got)
	}
	// A node whose address answers with another member's certificate
	// is not reached.
	if _, err := m.c.Apply(ctx, raftstore.NodeUpsert{Name: "n2", Addr: m.addr}); err != nil {
		t.Fatal(err)
	}
	if c, err := m.c.Dial(ctx, "n2", transport.ProtoMigrate); !errors.Is(err, fs.ErrPermission) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("n1 passed for n2: %v", err)
	}
}
