package migrate

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// mountEntry is what hiddenMounts needs of a mountinfo line.
type mountEntry struct {
	id, parent int
	mountpoint string
}

// hiddenMounts lists the mount points of pid's mount namespace that
// nothing in it can reach: mounts under a path that a later mount covers,
// such as the node's mounts below /tmp once a job has its own tmpfs there.
// CRIU would otherwise name them in the images as mounts the destination
// must bind, and touch each of them at restore: one the node has lost
// (a FUSE server that no longer answers) hangs the restore for good.
func hiddenMounts(pid int) ([]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ms, err := parseMounts(f)
	if err != nil {
		return nil, err
	}
	return hidden(ms), nil
}

// parseMounts reads "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." lines.
func parseMounts(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, mountEntry{id: id, parent: parent, mountpoint: unescapeMount(f[4])})
	}
	return out, sc.Err()
}

// hidden applies the rule: a mount is hidden when a sibling (a mount on
// the same parent) sits on a directory above its mount point, because a
// path lookup enters the sibling before it reaches the mount; whatever
// hangs below a hidden mount is hidden too. A mount point is listed only
// if every mount on it is hidden: CRIU skips mounts by path.
func hidden(ms []mountEntry) []string {
	byID := map[int]mountEntry{}
	children := map[int][]mountEntry{}
	for _, m := range ms {
		byID[m.id] = m
		children[m.parent] = append(children[m.parent], m)
	}
	covered := func(m mountEntry) bool {
		if m.parent == m.id {
			return false
		}
		for _, s := range children[m.parent] {
			if s.id != m.id && under(m.mountpoint, s.mountpoint) {
				return true
			}
		}
		return false
	}
	isHidden := map[int]bool{}
	var walk func(m mountEntry, above bool)
	walk = func(m mountEntry, above bool) {
		h := above || covered(m)
		isHidden[m.id] = h
		for _, c := range children[m.id] {
			if c.id != m.id {
				walk(c, h)
			}
		}
	}
	for _, m := range ms {
		if _, ok := byID[m.parent]; !ok || m.parent == m.id {
			walk(m, false)
		}
	}
	visible := map[string]bool{}
	for _, m := range ms {
		if !isHidden[m.id] {
			visible[m.mountpoint] = true
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range ms {
		if isHidden[m.id] && !visible[m.mountpoint] && !seen[m.mountpoint] {
			seen[m.mountpoint] = true
			out = append(out, m.mountpoint)
		}
	}
	return out
}

// under reports whether path lies strictly below dir.
func under(path, dir string) bool {
	if dir == "/" {
		return path != "/"
	}
	return strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
