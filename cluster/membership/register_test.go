package membership

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ssi/fs"
)

// A node registers only itself: a member whose certificate says n3
// cannot register as n2, and n2's record stays as it was.
func TestRegisterOnlyItself(t *testing.T) {
	_, fc, _ := leading(t, Config{})
	register(t, fc, "n2", "127.0.0.1:2")
	before, _ := fc.s.Node("n2")
	body, _ := json.Marshal(joinRequest{Name: "n2", Addr: "127.0.0.1:3", CPUs: 64})
	if err := fc.postAs(testContext(t), "n3", JoinPath, body, nil); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("n3 registering as n2: %v", err)
	}
	if after, _ := fc.s.Node("n2"); after != before {
		t.Fatalf("n2 changed: %+v, was %+v", after, before)
	}
	if _, ok := fc.s.Node("n3"); ok {
		t.Fatal("n3 got registered")
	}
	servers, _ := fc.s.Servers()
	for _, srv := range servers {
		if srv.Addr == "127.0.0.1:3" {
			t.Fatalf("the rogue address joined raft: %+v", servers)
		}
	}
}

// The digest is of the name:uid pairs alone, in any order; a uid that
// names another user changes it. Comments and NIS lines are not users.
func TestUsersDigest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n")
	b := write("b", "# local users\nalice:*:1000:100:Alice:/home/a:/bin/zsh\n\nroot:x:0:0::/:/bin/sh\n+@nis::::::\n")
	c := write("c", "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/sh\n")
	da, err := UsersDigest(a)
	if err != nil || len(da) != 64 {
		t.Fatalf("digest %q, %v", da, err)
	}
	if db, _ := UsersDigest(b); db != da {
		t.Errorf("same users, other order and fields: %s != %s", db, da)
	}
	if dc, _ := UsersDigest(c); dc == da {
		t.Error("uid 1000 is bob here and alice there, same digest")
	}
	if _, err := UsersDigest(filepath.Join(dir, "none")); err == nil {
		t.Error("no file, a digest")
	}
}

func TestMajorityDigest(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"", ""}, ""},
		{[]string{"b", "a", "b", ""}, "b"},
		{[]string{"b", "a"}, "a"}, // a tie: the smallest, on every node
		{[]string{"c", "", "c", "a", "a", "a"}, "a"},
	} {
		if got := MajorityDigest(tc.in); got != tc.want {
			t.Errorf("MajorityDigest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The leader records a node's digest and warns when it differs from the
// one the other nodes have.
func TestRegisterWarnsOfOtherUsers(t *testing.T) {
	m, fc, _ := leading(t, Config{})
	var logs bytes.Buffer
	m.log = slog.New(slog.NewTextHandler(&logs, nil))
	reg := func(name, digest string) joinReply {
		body, _ := json.Marshal(joinRequest{Name: name, Addr: "127.0.0.1:" + name[1:], CPUs: 1, UsersDigest: digest})
		var reply joinReply
		if err := fc.postAs(testContext(t), name, JoinPath, body, &reply); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		return reply
	}
	reg("n2", "aaaa")
	if r := reg("n3", "aaaa"); r.UsersWarning != "" || strings.Contains(logs.String(), "user database differs") {
		t.Fatalf("warned of the same users: %q\n%s", r.UsersWarning, logs.String())
	}
	if r := reg("n4", "bbbb"); !strings.Contains(r.UsersWarning, "user database differs") {
		t.Fatalf("n4 was not told: %q", r.UsersWarning)
	}
	if n, _ := fc.s.Node("n4"); n.UsersDigest != "bbbb" {
		t.Fatalf("n4 = %+v", n)
	}
	if !strings.Contains(logs.String(), "user database differs") || !strings.Contains(logs.String(), "node=n4") {
		t.Fatalf("no warning for n4:\n%s", logs.String())
	}
}
