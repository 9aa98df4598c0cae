package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"ssi/fs/mountinfo"
)

// fakeView is a View in memory that records what was asked of it.
type fakeView struct {
	mu      sync.Mutex
	nodes   []NodeView
	procs   []ProcView
	admin   map[string]bool
	asked   []string
	migrate error
	hide    bool // other users' processes are hidden (fs.hide_other_users)
}

func (v *fakeView) Nodes() []NodeView {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]NodeView(nil), v.nodes...)
}
func (v *fakeView) Procs(uid uint32) []ProcView {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []ProcView
	for _, p := range v.procs {
		if !v.hide || uid == 0 || uint32(p.UID) == uid {
			out = append(out, p)
		}
	}
	return out
}
func (v *fakeView) PerUser() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.hide
}
func (v *fakeView) Admin() map[string]bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]bool{}
	for k, x := range v.admin {
		out[k] = x
	}
	return out
}
func (v *fakeView) SetAdmin(_ context.Context, name string, value bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.admin[name] = value
	return nil
}
func (v *fakeView) Migrate(_ context.Context, cpid int, target string, uid uint32) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.asked = append(v.asked, fmt.Sprintf("migrate %d %s by %d", cpid, target, uid))
	return v.migrate
}
func (v *fakeView) SetLock(_ context.Context, cpid int, lock bool, uid uint32) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range v.procs {
		if v.procs[i].CPID == cpid {
			if uid != 0 && uint32(v.procs[i].UID) != uid {
				return ErrPermission
			}
			v.procs[i].Lock = lock
			return nil
		}
	}
	return ErrNoProcess
}

func mountFake(t *testing.T) (*fakeView, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	if testing.Short() {
		t.Skip("-short: skipping FUSE mount")
	}
	v := &fakeView{
		nodes: []NodeView{{Name: "node1", Up: true, Load: 0.5, CPUs: 2}, {Name: "node2", Up: false, CPUs: 1}},
		procs: []ProcView{{CPID: 7, Name: "sleep", Argv: []string{"sleep", "99"}, Node: "node1", Home: "node1", UID: 1000}},
		admin: map[string]bool{},
	}
	return v, mountAt(t, v, Options{})
}

// mountAt mounts v with o in a fresh directory, unmounted (and checked
// to be) when the test ends.
func mountAt(t *testing.T, v View, o Options) string {
	t.Helper()
	o.Mountpoint = filepath.Join(userDir(t), "cluster")
	m, err := Mount(v, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		if mountinfo.Mounted(o.Mountpoint) {
			t.Errorf("%s still mounted", o.Mountpoint)
		}
	})
	return o.Mountpoint
}

// userDir is a temporary directory other users may enter: the writes
// below are also made as uid 1000.
func userDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func names(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestMountedTree(t *testing.T) {
	v, dir := mountFake(t)
	if got := names(t, dir); got != "admin nodes proc" {
		t.Fatalf("/cluster holds %q", got)
	}
	if got := names(t, filepath.Join(dir, "nodes")); got != "node1 node2" {
		t.Fatalf("nodes: %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "nodes/node1/load")); got != "0.50\n" {
		t.Fatalf("node1 load %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "nodes/node2/status")); got != "down\n" {
		t.Fatalf("node2 status %q", got)
	}
	// Sizes are right, so tools that trust st_size work.
	st, err := os.Stat(filepath.Join(dir, "proc/7/cmdline"))
	if err != nil || st.Size() != int64(len("sleep\x0099\x00")) {
		t.Fatalf("cmdline size %v, %v", st, err)
	}
	if got := readFile(t, filepath.Join(dir, "proc/7/where")); got != "node1\n" {
		t.Fatalf("where %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "proc/8")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("proc/8: %v", err)
	}
	// Processes and nodes come and go.
	v.mu.Lock()
	v.procs = append(v.procs, ProcView{CPID: 9, Node: "node2"})
	v.nodes = v.nodes[:1]
	v.mu.Unlock()
	if got := names(t, filepath.Join(dir, "proc")); got != "7 9" {
		t.Fatalf("proc after a start: %q", got)
	}
	if got := names(t, filepath.Join(dir, "nodes")); got != "node1" {
		t.Fatalf("nodes after a removal: %q", got)
	}
}

// write opens path for writing as uid and writes value, like `echo`.
func write(t *testing.T, path, value string, uid int) error {
	t.Helper()
	cmd := exec.Command("bash", "-c", `printf '%s' "$1" > "$2"`, "bash", value, path)
	if uid != 0 {
		cmd = exec.Command("setpriv", "--reuid", itoa(uid), "--regid", itoa(uid), "--clear-groups",
			"bash", "-c", `printf '%s' "$1" > "$2"`, "bash", value, path)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestMountedWrites(t *testing.T) {
	v, dir := mountFake(t)
	block := filepath.Join(dir, "admin/block")
	if err := write(t, block, "1\n", 0); err != nil {
		t.Fatal(err)
	}
	if !v.Admin()["block"] || readFile(t, block) != "1\n" {
		t.Fatalf("block not set: %v", v.Admin())
	}
	cases := []struct {
		name, path, value string
		uid               int
		want              string
	}{
		{"garbage to admin", block, "yes", 0, "Invalid argument"},
		// Refused at open, as for any file one may not write.
		{"admin as a user", block, "0", 1000, "Permission denied"},
		{"lock as another user", filepath.Join(dir, "proc/7/lock"), "1", 1001, "Permission denied"},
		{"garbage to lock", filepath.Join(dir, "proc/7/lock"), "maybe", 0, "Invalid argument"},
		{"where, not yet", filepath.Join(dir, "proc/7/where"), "node2", 1000, "Function not implemented"},
		{"read-only file", filepath.Join(dir, "proc/7/nmigs"), "5", 0, "Permission denied"},
	}
	v.mu.Lock() // the kernel between here and Migrate is no sync the race detector sees
	v.migrate = ErrNotImplemented
	v.mu.Unlock()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := write(t, c.path, c.value, c.uid)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
	if !v.Admin()["block"] {
		t.Fatal("a refused write changed the switch")
	}
	if err := write(t, filepath.Join(dir, "proc/7/lock"), "1\n", 1000); err != nil {
		t.Fatalf("the owner's lock: %v", err)
	}
	if readFile(t, filepath.Join(dir, "proc/7/lock")) != "1\n" {
		t.Fatal("lock not set")
	}
}

func TestStaleMountIsReplaced(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	dir := filepath.Join(t.TempDir(), "cluster")
	v := &fakeView{admin: map[string]bool{}}
	first, err := Mount(v, Options{Mountpoint: dir})
	if err != nil {
		t.Fatal(err)
	}
	// Mount again over it, as an agent restarted after a crash would.
	second, err := Mount(v, Options{Mountpoint: dir})
	if err != nil {
		t.Fatalf("second mount: %v", err)
	}
	if got := names(t, dir); got != "admin nodes proc" {
		t.Fatalf("after replacing: %q", got)
	}
	// The first server's mount was detached under it, as a crashed
	// agent's would be; only the second is ours to unmount.
	_ = first
	if err := second.Unmount(); err != nil {
		t.Fatal(err)
	}
	if mountinfo.Mounted(dir) {
		t.Fatal("still mounted")
	}
}

// A mount namespace made while /cluster is mounted (a container, a lab
// node) keeps a copy of it, and the kernel then keeps the connection
// after the umount: Unmount must return all the same.
func TestUnmountWithACopyElsewhere(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	dir := filepath.Join(t.TempDir(), "cluster")
	m, err := Mount(&fakeView{admin: map[string]bool{}}, Options{Mountpoint: dir})
	if err != nil {
		t.Fatal(err)
	}
	copyNS := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "60")
	if err := copyNS.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = copyNS.Process.Kill(); _ = copyNS.Wait() })
	mi := fmt.Sprintf("/proc/%d/mountinfo", copyNS.Process.Pid)
	eventually(t, "the copy holds the mount", func() bool {
		b, _ := os.ReadFile(mi)
		return strings.Contains(string(b), dir) && strings.Contains(readFile(t, fmt.Sprintf("/proc/%d/comm", copyNS.Process.Pid)), "sleep")
	})
	done := start(m.Unmount)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * stopWait):
		t.Fatal("Unmount hung on the copy")
	}
	if mountinfo.Mounted(dir) {
		t.Fatal("still mounted here")
	}
}
