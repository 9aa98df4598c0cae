package migrate

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
)

// harmlessDevices are device files every node has and CRIU reopens.
var harmlessDevices = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true,
}

// CantMove says in one line why the tree rooted at root cannot move to
// another node, or "" if nothing is known to stop it. It looks at what
// CRIU cannot carry over: established TCP connections, terminals and
// other devices, open files that were deleted (except in its own /tmp).
func CantMove(root int) string {
	for _, pid := range Tree(root) {
		established := tcpEstablished(pid)
		var pts *jobTerminals
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			t, err := os.Readlink(fd)
			if err != nil {
				continue
			}
			terminal := strings.HasPrefix(t, "/dev/pts/") || strings.HasPrefix(t, "/dev/tty") || t == "/dev/console" || t == "/dev/ptmx"
			if terminal && pts == nil {
				pts = readJobTerminals(pid)
			}
			switch {
			case strings.HasPrefix(t, "socket:[") && established[strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]")]:
				return fmt.Sprintf("pid %d has an established TCP connection", pid)
			case t == "/dev/tty":
				// CRIU pairs an open /dev/tty with the first pty of its
				// session it meets, the master job-init holds, and refuses
				// the dump ("ctty inheritance detected").
				return fmt.Sprintf("pid %d has /dev/tty open (CRIU cannot move it; less, man and ssh open it)", pid)
			case terminal && pts.own(pid, filepath.Base(fd), t):
				// The job's own terminal: it moves with the job's devpts.
			case terminal:
				return fmt.Sprintf("pid %d uses a terminal of the node (%s)", pid, t)
			case strings.HasPrefix(t, "/dev/") && !harmlessDevices[t]:
				return fmt.Sprintf("pid %d has a device open (%s)", pid, t)
			case strings.HasPrefix(t, "/") && strings.HasSuffix(t, " (deleted)") && isDeleted(fd, t):
				name := strings.TrimSuffix(t, " (deleted)")
				if !ownTemp(name) {
					return fmt.Sprintf("pid %d has a deleted file open outside its own /tmp and /dev/shm (%s)", pid, name)
				}
				// CRIU carries it in the images (a ghost file), up to a limit.
				if fi, err := os.Stat(fd); err == nil && fi.Size() > GhostLimit {
					return fmt.Sprintf("pid %d has a deleted file of %d MiB open (%s); at most %d MiB move",
						pid, fi.Size()>>20, name, GhostLimit>>20)
				}
			}
		}
	}
	return ""
}

// fileName is the name a /proc link (fd, exe, cwd, map_files) gives
// its file, without the " (deleted)" the kernel adds when the name's
// dentry is unhashed, and whether the file is really gone from it. FUSE
// unhashes a dentry whose revalidation fails or finds the inode changed,
// and CI saw a /cluster/home file held open marked so after agent
// restarts without anyone deleting it (the cause is not found yet), so
// the mark alone does not say the file was deleted: it was not if its
// name still reaches it.
func fileName(link string) (name string, deleted bool, err error) {
	t, err := os.Readlink(link)
	if err != nil {
		return "", false, err
	}
	name, marked := strings.CutSuffix(t, " (deleted)")
	return name, marked && isDeleted(link, t), nil
}

// isDeleted reports whether target, what link reads and marked
// " (deleted)", names a file gone from its name: the name, not
// followed at its end, is not the file link holds. Only the identity is
// compared; whoever opens the name again checks it on their own.
func isDeleted(link, target string) bool {
	name := strings.TrimSuffix(target, " (deleted)")
	var held, named unix.Stat_t
	if !strings.HasPrefix(name, "/") || unix.Stat(link, &held) != nil || unix.Lstat(name, &named) != nil {
		return true
	}
	return held.Dev != named.Dev || held.Ino != named.Ino
}

// GhostLimit is the largest deleted-but-open file a move carries.
const GhostLimit = 64 << 20

// ownTemp reports whether path lies in a job's own /tmp or /dev/shm.
func ownTemp(path string) bool {
	for _, p := range jobns.OwnPrefixes() {
		if p != "/dev/pts/" && strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// jobTerminals is what tells a process's own terminals (a job's pty,
// which CRIU carries with the job's devpts mount) from the node's.
type jobTerminals struct {
	devpts int // mount ID of the job's own devpts on /dev/pts; 0: none
}

// readJobTerminals looks at pid's mounts: the devpts on its /dev/pts is
// the job's own if it is an instance of its own, one that no mount of
// the node (ours) shows; a copy of the node's in another namespace is
// still the node's.
func readJobTerminals(pid int) *jobTerminals {
	jt := &jobTerminals{}
	ms, err := jobns.Mounts(pid)
	if err != nil {
		return jt
	}
	ours, err := jobns.Mounts(os.Getpid())
	if err != nil {
		return jt
	}
	nodes := map[string]bool{}
	for _, m := range ours {
		if m.FSType == "devpts" {
			nodes[m.Dev] = true
		}
	}
	for _, m := range ms {
		if m.Mountpoint == "/dev/pts" && jobns.Own(m.Mountpoint, m.FSType) {
			// The last one mounted there is the one in use.
			jt.devpts = m.ID
			if nodes[m.Dev] {
				jt.devpts = 0
			}
		}
	}
	return jt
}

// own reports whether pid's descriptor fd, a terminal at path, is the
// job's own: a pty of the job's devpts, by the mount it was opened on; or
// /dev/ptmx, the node's device file, which in the job's mount namespace
// opens a pty of the devpts next to it, the job's. A pty of the node
// never is: the job's namespace does not even have the node's devpts
// mounted.
func (jt *jobTerminals) own(pid int, fd, path string) bool {
	if jt.devpts == 0 {
		return false
	}
	switch {
	case strings.HasPrefix(path, "/dev/pts/"):
		return fdMount(pid, fd) == jt.devpts
	case path == "/dev/ptmx":
		return true
	}
	return false
}

// fdMount is the mount ID pid's descriptor fd was opened on, 0 if unknown.
func fdMount(pid int, fd string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "mnt_id:"); ok {
			id, _ := strconv.Atoi(strings.TrimSpace(v))
			return id
		}
	}
	return 0
}

// tcpEstablished returns the socket inodes of established TCP
// connections in pid's network namespace.
func tcpEstablished(pid int) map[string]bool {
	out := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			// sl local remote st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(sc.Text())
			if len(fs) > 9 && fs[3] == "01" {
				out[fs[9]] = true
			}
		}
		fh.Close()
	}
	return out
}
