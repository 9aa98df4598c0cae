package fs

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestPathHomeAsCaller: the backend does what the user asks with the
// user's identity: what the user makes is the user's, with the mode the
// user's umask gives (not the agent's); what the user could not do on
// the directory itself fails, capabilities and all; supplementary groups
// count. Afterwards every thread of the agent is root again.
func TestPathHomeAsCaller(t *testing.T) {
	dir := userDir(t)
	mnt := pathMount(t, dir)
	bin := pathUserBin(t)
	pathUserDir(t, dir)
	pathMust(t, os.Mkdir(filepath.Join(dir, "root"), 0o755))
	pathMust(t, os.WriteFile(filepath.Join(dir, "root/x"), []byte("root\n"), 0o644))
	pathMust(t, os.WriteFile(filepath.Join(dir, "rootfile"), []byte("root\n"), 0o644))
	pathMust(t, os.Mkdir(filepath.Join(dir, "g"), 0o770))
	pathMust(t, os.Chown(filepath.Join(dir, "g"), 0, 4242))
	pathMust(t, os.Chmod(filepath.Join(dir, "g"), 0o770))

	t.Run("what the user makes is the user's", func(t *testing.T) {
		for _, k := range []struct {
			call, name string
			mode       uint32
		}{
			{"create", "f", unix.S_IFREG | 0o664},
			{"mkdir", "d", unix.S_IFDIR | 0o775},
			{"mkfifo", "p", unix.S_IFIFO | 0o664},
			{"symlink", "l", unix.S_IFLNK | 0o777},
		} {
			if e := asPathUser(t, bin, nil, k.call, filepath.Join(mnt, "u", k.name)); e != 0 {
				t.Fatalf("%s: %v", k.call, e)
			}
			var st unix.Stat_t
			pathMust(t, unix.Lstat(filepath.Join(dir, "u", k.name), &st))
			if st.Uid != pathUID || st.Gid != pathUID || st.Mode != k.mode {
				t.Errorf("%s made %s: uid %d gid %d mode %o, want %d %d %o", k.call, k.name, st.Uid, st.Gid, st.Mode, pathUID, pathUID, k.mode)
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, "u/f")); err != nil || string(b) != "the user's\n" {
			t.Errorf("the user's file holds %q, %v", b, err)
		}
	})
	t.Run("what the user could not do fails", func(t *testing.T) { pathUserCannot(t, dir, mnt, bin) })
	t.Run("supplementary groups", func(t *testing.T) {
		if got := asPathUser(t, bin, nil, "create", filepath.Join(mnt, "g/without")); got != syscall.EACCES {
			t.Errorf("outside the group: %v", got)
		}
		if got := asPathUser(t, bin, []uint32{4242}, "create", filepath.Join(mnt, "g/with")); got != 0 {
			t.Errorf("in the group: %v", got)
		}
		if got := pathDirNames(t, filepath.Join(dir, "g")); got != "with" {
			t.Errorf("the group's directory holds %q", got)
		}
	})
	threadsAreRoot(t)
}

// pathUserCannot: what the user could not do on dir itself fails through
// mnt, and changes nothing.
func pathUserCannot(t *testing.T, dir, mnt, bin string) {
	for _, k := range []struct {
		call, path string
		want       syscall.Errno
	}{
		{"create", "root/new", syscall.EACCES},
		{"open-write", "rootfile", syscall.EACCES},
		{"truncate", "rootfile", syscall.EACCES},
		{"chmod", "rootfile", syscall.EPERM},
		{"utimes", "rootfile", syscall.EPERM},
		{"unlink", "root/x", syscall.EACCES},
		{"mkdir", "root/d", syscall.EACCES},
		// Root's CAP_SYS_ADMIN is not the user's.
		{"trusted", "u/f", syscall.EPERM},
	} {
		if got := asPathUser(t, bin, nil, k.call, filepath.Join(mnt, k.path)); got != k.want {
			t.Errorf("%s %s: %v, want %v", k.call, k.path, got, k.want)
		}
	}
	if got := pathDirNames(t, filepath.Join(dir, "root")); got != "x" {
		t.Errorf("root's directory holds %q", got)
	}
	var st unix.Stat_t
	pathMust(t, unix.Stat(filepath.Join(dir, "rootfile"), &st))
	if b, _ := os.ReadFile(filepath.Join(dir, "rootfile")); string(b) != "root\n" || st.Mode != unix.S_IFREG|0o644 || st.Mtim.Sec == 7 {
		t.Errorf("root's file: %q mode %o mtime %d", b, st.Mode, st.Mtim.Sec)
	}
	// The same call as root passes: the user's failed for being the
	// user's.
	if err := pathCall("trusted", filepath.Join(mnt, "u/f")); err != nil {
		t.Errorf("trusted.* as root: %v", err)
	}
}

// threadsAreRoot fails t unless every thread of this process has the
// main thread's file system identity, groups and capabilities.
func threadsAreRoot(t *testing.T) {
	t.Helper()
	want := identityLines(t, "/proc/self/status")
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads: %v", err)
	}
	for _, task := range tasks {
		if got := identityLines(t, task); got != want && got != "" {
			t.Errorf("%s:\n%s\nwant\n%s", task, got, want)
		}
	}
}

// identityLines is what of status says who a thread is ("" if the
// thread ended meanwhile).
func identityLines(t *testing.T, status string) string {
	b, err := os.ReadFile(status)
	if err != nil {
		return ""
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		// Not Umask: the backend's threads have their own (0).
		for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapEff:", "CapPrm:"} {
			if strings.HasPrefix(line, k) {
				out = append(out, line)
			}
		}
	}
	return strings.Join(out, "\n")
}

func pathMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestGroupsOf: a caller's groups are read only when its thread is who
// FUSE says it is.
func TestGroupsOf(t *testing.T) {
	mine, err := unix.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	me := fuse.Caller{Owner: fuse.Owner{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}, Pid: uint32(os.Getpid())}
	if got := groupsOf(me); !slices.Equal(got, mine) {
		t.Errorf("my groups: %v, want %v", got, mine)
	}
	other := me
	other.Uid++
	if got := groupsOf(other); got != nil {
		t.Errorf("a thread of another uid: %v", got)
	}
	other = me
	other.Gid++
	if got := groupsOf(other); got != nil {
		t.Errorf("a thread of another gid: %v", got)
	}
	other = me
	other.Pid = 0
	if got := groupsOf(other); got != nil {
		t.Errorf("no thread: %v", got)
	}
}
