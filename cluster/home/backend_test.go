package home

import (
	"context"
	"errors"
	"testing"

	"ssi/fs"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// A file written through the backend reads back byte for byte, and the
// store's errors come back as fs's.
func TestBackendWritesAndReads(t *testing.T) {
	s := raftstoretest.New(t)
	raftstoretest.Apply(t, s, raftstore.HomeConfig{MaxFileSize: 1 << 20, Quota: 1 << 20})
	h := New("node1", raftstoretest.Local{S: s})
	ctx := context.Background()
	root, err := h.Getattr(raftstore.HomeRootIno)
	if err != nil || root.Kind != fs.HomeDir {
		t.Fatalf("root: %+v, %v", root, err)
	}
	a, err := h.Create(ctx, root.Ino, "f", fs.HomeFile, 0o644, 1000, 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Write(ctx, a.Ino, []fs.Extent{{Off: 0, Data: []byte("hello")}}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, err := h.Read(a.Ino, 0, buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	if _, err := h.Create(ctx, root.Ino, "f", fs.HomeFile, 0o644, 1000, 1000, ""); !errors.Is(err, fs.ErrExists) {
		t.Fatalf("second create: %v, want fs.ErrExists", err)
	}
	if _, err := h.Lookup(root.Ino, "nope"); !errors.Is(err, fs.ErrNotFound) {
		t.Fatalf("lookup: %v, want fs.ErrNotFound", err)
	}
	if h.Node() != "node1" {
		t.Fatal(h.Node())
	}
}
