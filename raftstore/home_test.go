package raftstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"
	"time"

	"ssi/raftstore/internal/testutil"
)

func allHomeCommands() []Command {
	return []Command{
		HomeConfig{MaxFileSize: 1 << 30, Quota: 1 << 40},
		HomeCreate{Parent: 1, Name: "l", Kind: HomeSymlink, Mode: 0o777, UID: 1000, GID: 100, Target: "x", Time: t0},
		HomeWrite{Ino: 2, Extents: []HomeExtent{{Off: 7, Data: []byte("hi")}, {Off: 1 << 20, Data: []byte{0, 255}}}, Time: t0},
		HomeTruncate{Ino: 2, Size: 9, Time: t0},
		HomeSetAttr{Ino: 2, Mode: ptr(uint32(0o600)), UID: ptr(uint32(1)), GID: ptr(uint32(2)), Atime: ptr(t0), Mtime: ptr(t0), Time: t0},
		HomeLink{Ino: 2, Parent: 1, Name: "b", Time: t0},
		HomeUnlink{Parent: 1, Name: "b", Time: t0},
		HomeRmdir{Parent: 1, Name: "d", Time: t0},
		HomeRename{OldParent: 1, OldName: "a", NewParent: 3, NewName: "b", Time: t0},
	}
}

var t1 = t0.Add(time.Hour)

// homeTree makes /d (ino 2), /d/e (3), /f (4, "hello"), /d/s -> f (5).
func homeTree() []Command {
	return []Command{
		HomeCreate{Parent: 1, Name: "d", Kind: HomeDir, Mode: 0o755, UID: 1000, Time: t0},
		HomeCreate{Parent: 2, Name: "e", Kind: HomeDir, Mode: 0o700, Time: t0},
		HomeCreate{Parent: 1, Name: "f", Kind: HomeFile, Mode: 0o644, Time: t0},
		HomeWrite{Ino: 4, Extents: []HomeExtent{{Data: []byte("hello")}}, Time: t0},
		HomeCreate{Parent: 2, Name: "s", Kind: HomeSymlink, Mode: 0o777, Target: "../f", Time: t0},
	}
}

func with(cmds ...Command) []Command { return append(homeTree(), cmds...) }

func homeRead(t *testing.T, s *state, ino, off uint64, n int) []byte {
	t.Helper()
	b, err := s.home.read(ino, off, n)
	if err != nil {
		t.Fatalf("read %d: %v", ino, err)
	}
	return b
}

func inode(t *testing.T, s *state, ino uint64) *HomeInode {
	t.Helper()
	in := s.home.inodes[ino]
	if in == nil {
		t.Fatalf("inode %d missing", ino)
	}
	return in
}

// checkHome verifies the tree's invariants: usage, link counts, parents,
// blocks within size.
func checkHome(t *testing.T, s *state) {
	t.Helper()
	h := s.home
	var used uint64
	links := map[uint64]uint32{}
	for p, d := range h.dirents {
		for _, ino := range d {
			in := h.inodes[ino]
			if in == nil {
				t.Fatalf("entry in %d names missing inode %d", p, ino)
			}
			if in.Type == HomeDir {
				links[p]++
				if in.Parent != p {
					t.Fatalf("dir %d parent %d, entry in %d", ino, in.Parent, p)
				}
				links[ino] += 2
			} else {
				links[ino]++
			}
		}
	}
	links[HomeRootIno] += 2
	for ino, in := range h.inodes {
		if in.Nlink != links[ino] {
			t.Fatalf("inode %d nlink %d, want %d", ino, in.Nlink, links[ino])
		}
		if in.Type == HomeFile {
			used += in.Size
		}
		for idx, b := range h.blocks[ino] {
			if idx*HomeBlockSize+uint64(len(b)) > in.Size || len(b) == 0 {
				t.Fatalf("inode %d block %d (%d bytes) past size %d", ino, idx, len(b), in.Size)
			}
		}
	}
	for ino := range h.blocks {
		if h.inodes[ino] == nil || len(h.blocks[ino]) == 0 {
			t.Fatalf("blocks of inode %d: missing inode or empty map", ino)
		}
	}
	if used != h.used {
		t.Fatalf("used %d, want %d", h.used, used)
	}
}

func TestFSMHomeCreate(t *testing.T) {
	runFSMCases(t, []fsmCase{
		{name: "tree", setup: homeTree()[:4], cmd: homeTree()[4], check: func(t *testing.T, s *state, res applyResult) {
			checkHome(t, s)
			if res.ino != 5 {
				t.Fatalf("ino = %d, want 5", res.ino)
			}
			d := inode(t, s, 2)
			if d.Nlink != 3 || d.Parent != 1 || d.UID != 1000 || !d.Mtime.Equal(t0) || inode(t, s, 1).Nlink != 3 {
				t.Fatalf("dir = %+v, root = %+v", d, inode(t, s, 1))
			}
			if l := inode(t, s, 5); l.Target != "../f" || l.Size != 4 || l.Type != HomeSymlink {
				t.Fatalf("symlink = %+v", l)
			}
			if got := homeRead(t, s, 4, 0, 100); string(got) != "hello" {
				t.Fatalf("f = %q", got)
			}
		}},
		{name: "exists", setup: homeTree(), cmd: HomeCreate{Parent: 1, Name: "f", Kind: HomeDir, Time: t1}, wantErr: ErrExists},
		{name: "parent missing", cmd: HomeCreate{Parent: 9, Name: "x", Kind: HomeFile}, wantErr: ErrNotFound},
		{name: "parent is a file", setup: homeTree(), cmd: HomeCreate{Parent: 4, Name: "x", Kind: HomeFile}, wantErr: ErrNotDir},
		{name: "bad name slash", cmd: HomeCreate{Parent: 1, Name: "a/b", Kind: HomeFile}, wantErr: ErrInvalid},
		{name: "bad name dotdot", cmd: HomeCreate{Parent: 1, Name: "..", Kind: HomeFile}, wantErr: ErrInvalid},
		{name: "bad type", cmd: HomeCreate{Parent: 1, Name: "x", Kind: "fifo"}, wantErr: ErrInvalid},
		{name: "bad mode", cmd: HomeCreate{Parent: 1, Name: "x", Kind: HomeFile, Mode: 0o100644}, wantErr: ErrInvalid},
		{name: "symlink without target", cmd: HomeCreate{Parent: 1, Name: "x", Kind: HomeSymlink}, wantErr: ErrInvalid},
		{name: "file with target", cmd: HomeCreate{Parent: 1, Name: "x", Kind: HomeFile, Target: "y"}, wantErr: ErrInvalid},
	})
}

func TestFSMHomeWrite(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), HomeBlockSize/16*2+10) // > 2 blocks
	runFSMCases(t, append(homeWriteLayoutCases(big), homeWriteRefusedCases()...))
}

// homeWriteLayoutCases write big and check how it lies in blocks and
// reads back.
func homeWriteLayoutCases(big []byte) []fsmCase {
	return []fsmCase{
		{name: "across blocks", setup: homeTree(),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: HomeBlockSize - 3, Data: big}, {Off: 1, Data: []byte("EL")}}, Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				in := inode(t, s, 4)
				if in.Size != HomeBlockSize-3+uint64(len(big)) || in.Version != 2 || !in.Mtime.Equal(t1) {
					t.Fatalf("inode = %+v", in)
				}
				if got := homeRead(t, s, 4, 0, 5); string(got) != "hELlo" {
					t.Fatalf("head = %q", got)
				}
				hole := homeRead(t, s, 4, 5, HomeBlockSize-8)
				if !bytes.Equal(hole, make([]byte, HomeBlockSize-8)) {
					t.Fatal("hole does not read as zeros")
				}
				if got := homeRead(t, s, 4, HomeBlockSize-3, len(big)+100); !bytes.Equal(got, big) {
					t.Fatalf("data differs (%d bytes read)", len(got))
				}
				if len(s.home.blocks[4]) != 4 {
					t.Fatalf("%d blocks, want 4", len(s.home.blocks[4]))
				}
			}},
		{name: "whole blocks kept, read into a used buffer", setup: homeTree(),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 2 * HomeBlockSize, Data: big[:HomeBlockSize+7]}}, Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if b := s.home.blocks[4][2]; len(b) != HomeBlockSize || cap(b) != HomeBlockSize {
					t.Fatalf("a whole block stored with len %d cap %d", len(b), cap(b))
				}
				dest := bytes.Repeat([]byte{0xff}, 3*HomeBlockSize+100)
				n, err := s.home.readAt(4, 0, dest)
				want := append(append([]byte("hello"), make([]byte, 2*HomeBlockSize-5)...), big[:HomeBlockSize+7]...)
				if err != nil || n != len(want) || !bytes.Equal(dest[:n], want) {
					t.Fatalf("readAt = %d, %v; content differs", n, err)
				}
			}},
		{name: "sparse far", setup: homeTree(),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 10 * HomeBlockSize, Data: []byte("z")}}, Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				got := homeRead(t, s, 4, 3, 10*HomeBlockSize)
				want := append(append([]byte("lo"), make([]byte, 10*HomeBlockSize-5)...), 'z')
				if !bytes.Equal(got, want) || len(s.home.blocks[4]) != 2 {
					t.Fatalf("read %d bytes, blocks %d", len(got), len(s.home.blocks[4]))
				}
				if b := homeRead(t, s, 4, 10*HomeBlockSize+1, 5); len(b) != 0 {
					t.Fatalf("read past end = %q", b)
				}
			}},
	}
}

// homeWriteRefusedCases write what is refused, or only just allowed, by
// kind, size and quota.
func homeWriteRefusedCases() []fsmCase {
	return []fsmCase{
		{name: "write to dir", setup: homeTree(), cmd: HomeWrite{Ino: 2, Extents: []HomeExtent{{Data: []byte("x")}}}, wantErr: ErrIsDir},
		{name: "write to symlink", setup: homeTree(), cmd: HomeWrite{Ino: 5, Extents: []HomeExtent{{Data: []byte("x")}}}, wantErr: ErrInvalid},
		{name: "write missing", cmd: HomeWrite{Ino: 9}, wantErr: ErrNotFound},
		{name: "write overflow", setup: homeTree(), cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 1<<64 - 1, Data: []byte("xx")}}}, wantErr: ErrFileTooBig},
		{name: "max file size, no partial write", setup: with(HomeConfig{MaxFileSize: 100}),
			cmd:     HomeWrite{Ino: 4, Extents: []HomeExtent{{Data: []byte("ok")}, {Off: 99, Data: []byte("xx")}}},
			wantErr: ErrFileTooBig},
		{name: "max file size exact", setup: with(HomeConfig{MaxFileSize: 100}),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 99, Data: []byte("x")}}}},
		{name: "quota", setup: with(HomeConfig{Quota: 20}, HomeCreate{Parent: 1, Name: "g", Kind: HomeFile}, HomeTruncate{Ino: 6, Size: 10}),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 5, Data: []byte("123456")}}}, wantErr: ErrNoSpace},
		{name: "quota exact", setup: with(HomeConfig{Quota: 20}, HomeCreate{Parent: 1, Name: "g", Kind: HomeFile}, HomeTruncate{Ino: 6, Size: 10}),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 5, Data: []byte("12345")}}},
			check: func(t *testing.T, s *state, _ applyResult) {
				if st := s.home.stats(); st.Used != 20 || st.Quota != 20 || st.Inodes != 6 {
					t.Fatalf("stats = %+v", st)
				}
			}},
		{name: "overwrite within size over quota", setup: with(HomeConfig{Quota: 1}),
			cmd: HomeWrite{Ino: 4, Extents: []HomeExtent{{Data: []byte("J")}}}},
	}
}

func TestFSMHomeTruncate(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), HomeBlockSize/16*2+10) // > 2 blocks
	runFSMCases(t, []fsmCase{
		{name: "truncate shrink then grow reads zeros",
			setup: with(HomeWrite{Ino: 4, Extents: []HomeExtent{{Data: big}}}, HomeTruncate{Ino: 4, Size: HomeBlockSize + 5}),
			cmd:   HomeTruncate{Ino: 4, Size: 3 * HomeBlockSize, Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				got := homeRead(t, s, 4, 0, 4*HomeBlockSize)
				want := append(bytes.Clone(big[:HomeBlockSize+5]), make([]byte, 2*HomeBlockSize-5)...)
				if !bytes.Equal(got, want) || len(s.home.blocks[4]) != 2 || !inode(t, s, 4).Ctime.Equal(t1) {
					t.Fatalf("read %d bytes, %d blocks", len(got), len(s.home.blocks[4]))
				}
			}},
		{name: "truncate to zero", setup: homeTree(), cmd: HomeTruncate{Ino: 4},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if _, ok := s.home.blocks[4]; ok || s.home.used != 0 {
					t.Fatal("blocks left after truncate to 0")
				}
			}},
		{name: "truncate over max", setup: with(HomeConfig{MaxFileSize: 10}), cmd: HomeTruncate{Ino: 4, Size: 11}, wantErr: ErrFileTooBig},
		{name: "truncate over quota", setup: with(HomeConfig{Quota: 10}), cmd: HomeTruncate{Ino: 4, Size: 11}, wantErr: ErrNoSpace},
		{name: "truncate dir", setup: homeTree(), cmd: HomeTruncate{Ino: 2}, wantErr: ErrIsDir},
	})
}

func TestFSMHomeSetAttr(t *testing.T) {
	runFSMCases(t, []fsmCase{
		{name: "some fields", setup: homeTree(), cmd: HomeSetAttr{Ino: 4, Mode: ptr(uint32(0o4750)), GID: ptr(uint32(7)), Mtime: ptr(t1.Add(time.Hour)), Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				in := inode(t, s, 4)
				if in.Mode != 0o4750 || in.GID != 7 || in.UID != 0 || !in.Mtime.Equal(t1.Add(time.Hour)) || !in.Ctime.Equal(t1) || !in.Atime.Equal(t0) {
					t.Fatalf("inode = %+v", in)
				}
			}},
		{name: "missing", cmd: HomeSetAttr{Ino: 9}, wantErr: ErrNotFound},
		{name: "bad mode", setup: homeTree(), cmd: HomeSetAttr{Ino: 4, Mode: ptr(uint32(0o40755)), UID: ptr(uint32(1))}, wantErr: ErrInvalid},
	})
}

func TestFSMHomeLinks(t *testing.T) {
	runFSMCases(t, []fsmCase{
		{name: "link", setup: homeTree(), cmd: HomeLink{Ino: 4, Parent: 3, Name: "f2", Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if in := inode(t, s, 4); in.Nlink != 2 || !in.Ctime.Equal(t1) || s.home.dirents[3]["f2"] != 4 {
					t.Fatalf("inode = %+v", in)
				}
			}},
		{name: "unlink one of two links keeps data", setup: with(HomeLink{Ino: 4, Parent: 3, Name: "f2"}), cmd: HomeUnlink{Parent: 1, Name: "f"},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if in := inode(t, s, 4); in.Nlink != 1 || string(homeRead(t, s, 4, 0, 9)) != "hello" {
					t.Fatalf("inode = %+v", in)
				}
			}},
		{name: "unlink last link drops inode and data", setup: homeTree(), cmd: HomeUnlink{Parent: 1, Name: "f", Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if _, ok := s.home.inodes[4]; ok || s.home.blocks[4] != nil || s.home.used != 0 || !inode(t, s, 1).Mtime.Equal(t1) {
					t.Fatal("inode 4 still there")
				}
			}},
		{name: "unlink symlink", setup: homeTree(), cmd: HomeUnlink{Parent: 2, Name: "s"}, check: func(t *testing.T, s *state, _ applyResult) { checkHome(t, s) }},
		{name: "link dir", setup: homeTree(), cmd: HomeLink{Ino: 2, Parent: 1, Name: "d2"}, wantErr: ErrIsDir},
		{name: "link exists", setup: homeTree(), cmd: HomeLink{Ino: 4, Parent: 2, Name: "e"}, wantErr: ErrExists},
		{name: "link into file", setup: homeTree(), cmd: HomeLink{Ino: 4, Parent: 4, Name: "x"}, wantErr: ErrNotDir},
		{name: "link missing", setup: homeTree(), cmd: HomeLink{Ino: 9, Parent: 1, Name: "x"}, wantErr: ErrNotFound},
		{name: "unlink dir", setup: homeTree(), cmd: HomeUnlink{Parent: 1, Name: "d"}, wantErr: ErrIsDir},
		{name: "unlink missing", setup: homeTree(), cmd: HomeUnlink{Parent: 1, Name: "nope"}, wantErr: ErrNotFound},
		{name: "rmdir", setup: homeTree(), cmd: HomeRmdir{Parent: 2, Name: "e"},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if _, ok := s.home.dirents[3]; ok || inode(t, s, 2).Nlink != 2 {
					t.Fatal("rmdir left state behind")
				}
			}},
		{name: "rmdir non-empty", setup: homeTree(), cmd: HomeRmdir{Parent: 1, Name: "d"}, wantErr: ErrNotEmpty},
		{name: "rmdir file", setup: homeTree(), cmd: HomeRmdir{Parent: 1, Name: "f"}, wantErr: ErrNotDir},
	})
}

func TestFSMHomeRename(t *testing.T) {
	mkfile := func(parent uint64, name string, data string) []Command {
		return []Command{
			HomeCreate{Parent: parent, Name: name, Kind: HomeFile, Mode: 0o600},
			HomeWrite{Ino: 6, Extents: []HomeExtent{{Data: []byte(data)}}},
		}
	}
	runFSMCases(t, []fsmCase{
		{name: "across dirs", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 3, NewName: "g", Time: t1},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if s.home.dirents[3]["g"] != 4 || s.home.dirents[1]["f"] != 0 || !inode(t, s, 3).Mtime.Equal(t1) {
					t.Fatal("not moved")
				}
			}},
		{name: "over existing file", setup: with(mkfile(3, "g", "old")...), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 3, NewName: "g"},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if s.home.dirents[3]["g"] != 4 || s.home.inodes[6] != nil || s.home.blocks[6] != nil || s.home.used != 5 {
					t.Fatal("target not replaced")
				}
			}},
		{name: "dir across dirs", setup: homeTree(), cmd: HomeRename{OldParent: 2, OldName: "e", NewParent: 1, NewName: "e"},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if inode(t, s, 3).Parent != 1 {
					t.Fatal("parent not updated")
				}
			}},
		{name: "dir over empty dir", setup: with(HomeCreate{Parent: 1, Name: "x", Kind: HomeDir}), cmd: HomeRename{OldParent: 1, OldName: "x", NewParent: 2, NewName: "e"},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if s.home.dirents[2]["e"] != 6 || s.home.inodes[3] != nil {
					t.Fatal("dir not replaced")
				}
			}},
		{name: "same name", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 1, NewName: "f"},
			check: func(t *testing.T, s *state, _ applyResult) { checkHome(t, s) }},
		{name: "onto its own hard link", setup: with(HomeLink{Ino: 4, Parent: 1, Name: "g"}), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 1, NewName: "g"},
			check: func(t *testing.T, s *state, _ applyResult) {
				checkHome(t, s)
				if inode(t, s, 4).Nlink != 2 {
					t.Fatal("links changed")
				}
			}},
		{name: "dir over non-empty dir", setup: with(HomeCreate{Parent: 1, Name: "x", Kind: HomeDir}), cmd: HomeRename{OldParent: 1, OldName: "x", NewParent: 1, NewName: "d"}, wantErr: ErrNotEmpty},
		{name: "dir into itself", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "d", NewParent: 2, NewName: "x"}, wantErr: ErrInvalid},
		{name: "dir into its subtree", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "d", NewParent: 3, NewName: "x"}, wantErr: ErrInvalid},
		{name: "dir over file", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "d", NewParent: 1, NewName: "f"}, wantErr: ErrNotDir},
		{name: "file over dir", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 1, NewName: "d"}, wantErr: ErrIsDir},
		{name: "missing source", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "zz", NewParent: 1, NewName: "y"}, wantErr: ErrNotFound},
		{name: "bad new name", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 1, NewName: ""}, wantErr: ErrInvalid},
		{name: "new parent not a dir", setup: homeTree(), cmd: HomeRename{OldParent: 1, OldName: "f", NewParent: 5, NewName: "y"}, wantErr: ErrNotDir},
	})
}

// A snapshot carries the home tree, data included, and restores equal.
func TestHomeSnapshotRoundTrip(t *testing.T) {
	f := richFSM(t)
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 50000)
	f.must(t, homeTree()...)
	f.must(t, HomeConfig{MaxFileSize: 1 << 30, Quota: 1 << 31},
		HomeWrite{Ino: 4, Extents: []HomeExtent{{Off: 3 * HomeBlockSize, Data: data}}, Time: t1},
		HomeLink{Ino: 4, Parent: 3, Name: "hard"},
		HomeCreate{Parent: 1, Name: "gone", Kind: HomeFile}, HomeUnlink{Parent: 1, Name: "gone"})
	b := snapshotBytes(t, f.fsm)
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	assertStateEqual(t, f.st, g.st)
	checkHome(t, g.st)
	if got := homeRead(t, g.st, 4, 3*HomeBlockSize, len(data)); !bytes.Equal(got, data) {
		t.Fatal("data differs after restore")
	}
	// The restored tree keeps allocating where the old one stopped.
	res := (&testFSM{fsm: g, index: f.index}).apply(t, HomeCreate{Parent: 1, Name: "new", Kind: HomeFile})
	if res.err != nil || res.ino != 7 {
		t.Fatalf("create after restore: ino %d, %v", res.ino, res.err)
	}
}

// A snapshot written before the home tree existed restores with an empty
// root.
func TestHomeSnapshotWithoutHome(t *testing.T) {
	var buf bytes.Buffer
	sw := &snapWriter{w: bufio.NewWriter(&buf)}
	buf.WriteString(snapMagic + "\x00\x01")
	sw.record(recCounters, snapCounters{NextCPID: 1})
	sw.record(recEnd, snapEnd{Records: 1})
	if sw.err != nil || sw.w.Flush() != nil {
		t.Fatal("cannot build snapshot")
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	assertStateEqual(t, newState(), g.st)
}

// The snapshot shares block data with the live state, so a write after
// Snapshot must not show in what Persist writes.
func TestHomeSnapshotIsolated(t *testing.T) {
	f := newTestFSM()
	f.must(t, homeTree()...)
	want := f.st.clone()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f.must(t, HomeWrite{Ino: 4, Extents: []HomeExtent{{Data: []byte("HELLO, world")}}}, HomeTruncate{Ino: 4, Size: 2})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	assertStateEqual(t, want, g.st)
}

func TestHomeErrorCodes(t *testing.T) {
	for _, e := range []error{ErrNotEmpty, ErrIsDir, ErrNotDir, ErrFileTooBig, ErrNoSpace} {
		if got := ErrorFromCode(ErrorCode(wrap(e)), "x"); !errors.Is(got, e) {
			t.Errorf("%v does not survive a code round trip", e)
		}
	}
}

// A 1 MiB file written through the leader reads back identically on
// every node, and after a restart of all of them.
func TestClusterHomeReplicates(t *testing.T) {
	// Entries of about a megabyte: looser timings than the other
	// cluster tests, so a slow (race-enabled) run keeps its leader.
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 300*time.Millisecond, 300*time.Millisecond, 150*time.Millisecond
	})
	leader := c.leader()
	res, err := leader.store.Apply(testutil.Context(t), HomeCreate{Parent: HomeRootIno, Name: "big", Kind: HomeFile, Mode: 0o644, UID: 1000, Time: t0})
	if err != nil || res.Ino == 0 {
		t.Fatalf("create: %+v, %v", res, err)
	}
	ino := res.Ino
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*7 + i>>11)
	}
	index := writeHomeBatches(t, leader, ino, data)
	want := sha256.Sum256(data)
	for _, nd := range c.followers() {
		if err := nd.store.WaitApplied(testutil.Context(t), index); err != nil {
			t.Fatal(err)
		}
		checkHomeBig(t, nd, ino, len(data), want)
	}
	checkHomeBig(t, leader, ino, len(data), want)

	// A follower refuses, a state error comes back as the result.
	if _, err := c.followers()[0].store.Apply(testutil.Context(t), HomeTruncate{Ino: ino}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("apply on follower: %v", err)
	}
	if _, err := leader.store.Apply(testutil.Context(t), HomeRmdir{Parent: HomeRootIno, Name: "big"}); !errors.Is(err, ErrNotDir) {
		t.Fatalf("rmdir of a file: %v", err)
	}

	// One node restarts through a snapshot, all through their logs.
	if err := c.nodes[1].store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.nodes {
		c.stop(nd)
	}
	for i := range c.nodes {
		c.start(i, i == 0)
	}
	c.sync()
	for _, nd := range c.nodes {
		checkHomeBig(t, nd, ino, len(data), want)
	}
}

// writeHomeBatches writes data to ino through leader in four batches of
// odd-sized extents crossing block boundaries; it returns the last
// write's index.
func writeHomeBatches(t *testing.T, leader *testNode, ino uint64, data []byte) uint64 {
	t.Helper()
	var index uint64
	const batch = 1 << 18
	for off := 0; off < len(data); off += batch {
		var exts []HomeExtent
		for o := off; o < off+batch; o += 10000 {
			exts = append(exts, HomeExtent{Off: uint64(o), Data: data[o:min(o+10000, off+batch)]})
		}
		res, err := leader.store.Apply(testutil.Context(t), HomeWrite{Ino: ino, Extents: exts, Time: t1})
		if err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		index = res.Index
	}
	return index
}

// checkHomeBig checks that nd's home holds only "big", ino, of size
// bytes whose hash is want, written in four batches.
func checkHomeBig(t *testing.T, nd *testNode, ino uint64, size int, want [sha256.Size]byte) {
	t.Helper()
	in, err := nd.store.HomeLookup(HomeRootIno, "big")
	if err != nil || in.Ino != ino || in.Size != uint64(size) || in.Version != 4 {
		t.Fatalf("%s: lookup = %+v, %v", nd.id, in, err)
	}
	got, err := nd.store.HomeRead(ino, 0, 2<<20)
	if err != nil || sha256.Sum256(got) != want {
		t.Fatalf("%s: read %d bytes, %v; content differs", nd.id, len(got), err)
	}
	if ents, err := nd.store.HomeReaddir(HomeRootIno); err != nil || len(ents) != 1 || ents[0] != (HomeDirent{Name: "big", Ino: ino, Type: HomeFile}) {
		t.Fatalf("%s: readdir = %+v, %v", nd.id, ents, err)
	}
	if st := nd.store.HomeStatfs(); st.Used != uint64(size) || st.Inodes != 2 {
		t.Fatalf("%s: statfs = %+v", nd.id, st)
	}
}
