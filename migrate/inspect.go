package migrate

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// FileRef is a file the tree uses outside the shared home: the
// destination must have it, with the same size, for CRIU to restore.
type FileRef struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
}

// harmlessDevices are device files every node has and CRIU reopens.
var harmlessDevices = map[string]bool{
	"/dev/null": true, "/dev/zero": true, "/dev/full": true, "/dev/random": true, "/dev/urandom": true,
}

// CantMove says in one line why the tree rooted at root cannot move to
// another node, or "" if nothing is known to stop it. It looks at what
// CRIU cannot carry over: established TCP connections, terminals and
// other devices, open files that were deleted.
func CantMove(root int) string {
	for _, pid := range Tree(root) {
		established := tcpEstablished(pid)
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			t, err := os.Readlink(fd)
			if err != nil {
				continue
			}
			switch {
			case strings.HasPrefix(t, "socket:[") && established[strings.TrimSuffix(strings.TrimPrefix(t, "socket:["), "]")]:
				return fmt.Sprintf("pid %d has an established TCP connection", pid)
			case strings.HasPrefix(t, "/dev/pts/") || strings.HasPrefix(t, "/dev/tty") || t == "/dev/console":
				return fmt.Sprintf("pid %d uses a terminal (%s)", pid, t)
			case strings.HasPrefix(t, "/dev/") && !harmlessDevices[t]:
				return fmt.Sprintf("pid %d has a device open (%s)", pid, t)
			case strings.HasPrefix(t, "/") && strings.HasSuffix(t, " (deleted)"):
				return fmt.Sprintf("pid %d has a deleted file open (%s)", pid, strings.TrimSuffix(t, " (deleted)"))
			}
		}
	}
	return ""
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

// OutsideFiles lists the regular files the tree has open or mapped (its
// executables and libraries too) that are not under any of shared: the
// destination must have them.
func OutsideFiles(root int, shared ...string) []FileRef {
	seen := map[string]bool{}
	var out []FileRef
	add := func(p string) {
		if !strings.HasPrefix(p, "/") || seen[p] || strings.HasSuffix(p, " (deleted)") {
			return
		}
		seen[p] = true
		for _, s := range append(shared, "/proc/", "/sys/", "/dev/") {
			if s != "" && strings.HasPrefix(p, s) {
				return
			}
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return
		}
		out = append(out, FileRef{Path: p, Size: fi.Size()})
	}
	for _, pid := range Tree(root) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
			add(exe)
		}
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			if t, err := os.Readlink(fd); err == nil {
				add(t)
			}
		}
		if fh, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid)); err == nil {
			sc := bufio.NewScanner(fh)
			for sc.Scan() {
				if i := strings.Index(sc.Text(), " /"); i >= 0 {
					add(strings.TrimSpace(sc.Text()[i:]))
				}
			}
			fh.Close()
		}
	}
	return out
}

// MissingFiles returns, one line each, the files of want this node lacks
// or has with another size.
func MissingFiles(want []FileRef) []string {
	var out []string
	for _, f := range want {
		fi, err := os.Stat(f.Path)
		switch {
		case err != nil:
			out = append(out, fmt.Sprintf("%s is missing", f.Path))
		case fi.Size() != f.Size:
			out = append(out, fmt.Sprintf("%s has %d bytes, not %d", f.Path, fi.Size(), f.Size))
		}
	}
	return out
}
