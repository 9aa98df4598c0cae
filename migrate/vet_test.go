package migrate

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/creds"
	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fown"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// vetWorld is a directory tree for the file checks: the user's own file
// (home/d/passwd), a root-only file (secret/f) and a link to the secret
// directory in the user's home (home/l).
type vetWorld struct {
	dir, own, secret, link string
	user                   Cred
}

func newVetWorld(t *testing.T) *vetWorld {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: opens files as another user")
	}
	// Not in /tmp: a job's /tmp is its own, and the check leaves it to
	// CRIU.
	dir, err := os.MkdirTemp("/var/tmp", "ssi-vet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &vetWorld{dir: dir, own: dir + "/home/d/passwd", secret: dir + "/secret/f", link: dir + "/home/l",
		user: Cred{UID: 1000, GID: 1000}}
	for _, step := range []error{
		os.MkdirAll(dir+"/home/d", 0o755), os.WriteFile(w.own, []byte("mine\n"), 0o644),
		os.Chown(dir+"/home", 1000, 1000), os.Chown(dir+"/home/d", 1000, 1000), os.Chown(w.own, 1000, 1000),
		os.Mkdir(dir+"/secret", 0o700), os.WriteFile(w.secret, []byte("root's\n"), 0o600),
		os.Symlink(dir+"/secret", w.link),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	return w
}

// ref is what a dump would have recorded of path, used for access.
func (w *vetWorld) ref(t *testing.T, path string, access int) FileRef {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return FileRef{Path: path, Size: st.Size, Key: "file[1:2]", Dev: st.Dev, Ino: st.Ino, Mode: st.Mode, Access: access}
}

// TestCheckFilesAsTheOwner: the early check opens as the owner, follows
// no link and compares inodes under the shared directory.
func TestCheckFilesAsTheOwner(t *testing.T) {
	w := newVetWorld(t)
	own := w.ref(t, w.own, unix.O_WRONLY)
	viaLink := w.ref(t, w.secret, unix.O_RDONLY)
	viaLink.Path = w.link + "/f"
	moved := own
	moved.Ino++
	dir := own
	dir.Mode = unix.S_IFDIR | 0o755
	for _, tc := range []struct {
		name   string
		ref    FileRef
		shared string
		want   string // "" the file is fine
	}{
		{"the owner's own file", own, w.dir + "/", ""},
		{"a link in the path", viaLink, "", "a symbolic link is in its path"},
		{"a file the owner may not open", w.ref(t, w.secret, unix.O_RDONLY), "", "its owner may not open it"},
		{"another inode under the shared directory", moved, w.dir + "/", "another file than at dump"},
		{"another kind", dir, "", "is a regular file now, a directory at dump"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := CheckFiles([]FileRef{tc.ref}, w.user, tc.shared, nil)
			if tc.want == "" && len(got) != 0 || tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)) {
				t.Fatalf("CheckFiles: %q, want %q", got, tc.want)
			}
		})
	}
	// Trusted files are checked as root.
	if got := CheckFiles([]FileRef{w.ref(t, w.secret, unix.O_RDONLY)}, w.user, "", []string{w.secret}); len(got) != 0 {
		t.Fatalf("a trusted root file: %q", got)
	}
	// The owner's identity stayed on its own thread.
	for range 20 {
		if _, err := os.ReadFile(w.secret); err != nil {
			t.Fatalf("root lost its rights after a check: %v", err)
		}
	}
}

// TestVetFilesHandsTheFileOver: the definitive check reads the images,
// opens each external file as the owner for what the process does with
// it, and refuses links, unrecorded files and foreign credentials.
func TestVetFilesHandsTheFileOver(t *testing.T) {
	w := newVetWorld(t)
	own := w.ref(t, w.own, unix.O_WRONLY)
	// Opened with O_NOFOLLOW, as sqlite opens its databases.
	ext := regEntry("file[1:2]", unix.O_WRONLY|unix.O_APPEND|unix.O_NOFOLLOW, true)

	dir := testImages(t, 1000, []FileRef{own}, ext)
	v, err := vetFiles(dir, FileCheck{UID: 1000, Shared: w.dir + "/"})
	if err != nil {
		t.Fatalf("the owner's own file: %v", err)
	}
	defer v.close()
	// CRIU reopens it through a /proc link: O_NOFOLLOW must be gone.
	var flags []uint32
	if err := readImage(dir+"/files.img", func() proto.Message { return &fdinfo.FileEntry{} }, func(m proto.Message) {
		flags = append(flags, m.(*fdinfo.FileEntry).GetReg().GetFlags())
	}); err != nil || len(flags) != 1 || flags[0] != unix.O_WRONLY|unix.O_APPEND {
		t.Fatalf("files.img after the check: flags %#o (%v), want O_WRONLY|O_APPEND", flags, err)
	}
	if len(v.inherit) != 1 || v.inherit[0].Key != "file[1:2]" {
		t.Fatalf("inherit: %+v", v.inherit)
	}
	fl, _ := unix.FcntlInt(v.inherit[0].File.Fd(), unix.F_GETFL, 0)
	if fl&unix.O_ACCMODE != unix.O_WRONLY {
		t.Fatalf("the file is open with flags %#o, want write only", fl)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(v.inherit[0].File.Fd()), &st); err != nil || st.Ino != own.Ino {
		t.Fatalf("handed inode %d (%v), want %d", st.Ino, err, own.Ino)
	}

	viaLink := own
	viaLink.Path = w.link + "/f"
	for _, tc := range []struct {
		name    string
		uid     uint32
		refs    []FileRef
		entries []*fdinfo.FileEntry
		want    string
	}{
		{"a link in the path", 1000, []FileRef{viaLink}, []*fdinfo.FileEntry{ext}, "symbolic link"},
		{"an external file the dump did not record", 1000, nil, []*fdinfo.FileEntry{ext}, "did not record"},
		{"a file dumped by path on a node mount", 1000, nil,
			[]*fdinfo.FileEntry{regEntry(w.own, unix.O_RDONLY, false)}, "was not recorded at dump"},
		{"a task of another uid", 0, []FileRef{own}, []*fdinfo.FileEntry{ext}, "runs as uid 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := vetFiles(testImages(t, tc.uid, tc.refs, tc.entries...), FileCheck{UID: 1000})
			if err == nil {
				v.close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("vetFiles: %v, want %q", err, tc.want)
			}
		})
	}
}

// testImages writes the images of a one-task tree running as uid that
// holds entries, and what its dump recorded (refs).
func testImages(t *testing.T, uid uint32, refs []FileRef, entries ...*fdinfo.FileEntry) string {
	d := t.TempDir()
	b, _ := json.Marshal(refs)
	if err := os.WriteFile(filepath.Join(d, HeldFilesName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	writeTestImage(t, d+"/pstree.img", &pstree.PstreeEntry{Pid: proto.Uint32(1)})
	writeTestImage(t, d+"/core-1.img", &criucore.CoreEntry{ThreadCore: &criucore.ThreadCoreEntry{
		Creds: &creds.CredsEntry{Uid: &uid, Euid: &uid, Suid: &uid, Fsuid: &uid, Gid: proto.Uint32(1000)}}})
	msgs := make([]proto.Message, len(entries))
	for i, e := range entries {
		msgs[i] = e
	}
	writeTestImage(t, d+"/files.img", msgs...)
	return d
}

// regEntry is files.img's entry of a regular file, external or by path.
func regEntry(name string, flags uint32, ext bool) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(1), Reg: &regfile.RegFileEntry{
		Id: proto.Uint32(1), Flags: &flags, Pos: proto.Uint64(0), Fown: &fown.FownEntry{}, Name: &name, Ext: &ext,
		Mode: proto.Uint32(unix.S_IFREG | 0o644)}}
}

// writeTestImage writes msgs as a CRIU image file.
func writeTestImage(t *testing.T, path string, msgs ...proto.Message) {
	t.Helper()
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, imgCommonMagic)
	b = binary.LittleEndian.AppendUint32(b, 0x12345678) // the image's own magic: not checked
	for _, m := range msgs {
		e, err := proto.MarshalOptions{AllowPartial: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAuditFindsUncheckedFiles: the audit of a restored tree fails
// while the tree holds a file or directory the check did not vet.
func TestAuditFindsUncheckedFiles(t *testing.T) {
	w := newVetWorld(t)
	f, err := os.Open(w.own)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Dir = w.dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Until it sleeps, it is still mapping what it runs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid))
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", cmd.Process.Pid))
		if strings.HasSuffix(exe, "/sleep") && strings.Contains(string(b), "nanosleep") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep did not go to sleep (exe %q, wchan %q)", exe, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	v := &vetted{ok: map[devIno]bool{}}
	// Its executable and libraries, its root and working directory are
	// vetted; its descriptor of the user's file is not, at first.
	for _, p := range []string{"/", w.dir, fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		v.ok[statID(st)] = true
	}
	maps, _ := filepath.Glob(fmt.Sprintf("/proc/%d/map_files/*", cmd.Process.Pid))
	for _, m := range maps {
		var st unix.Stat_t
		if unix.Stat(m, &st) == nil {
			v.ok[statID(st)] = true
		}
	}
	err = v.audit(cmd.Process.Pid)
	if err == nil || !strings.Contains(err.Error(), w.own) {
		t.Fatalf("audit with the file unchecked: %v, want it named", err)
	}
	st, _ := fstat(f)
	v.ok[statID(st)] = true
	if err := v.audit(cmd.Process.Pid); err != nil {
		t.Fatalf("audit with everything checked: %v", err)
	}
}
