package migrate

import (
	"strings"

	"ssi/cluster/jobns"
)

// hiddenMounts lists the mount points of pid's mount namespace that
// nothing in it can reach: mounts under a path that a later mount covers,
// such as the node's mounts below /tmp once a job has its own tmpfs there.
// CRIU would otherwise name them in the images as mounts the destination
// must bind, and touch each of them at restore: one the node has lost
// (a FUSE server that no longer answers) hangs the restore for good.
func hiddenMounts(pid int) ([]string, error) {
	ms, err := jobns.Mounts(pid)
	if err != nil {
		return nil, err
	}
	return hidden(ms), nil
}

// hidden applies the rule: a mount is hidden when a sibling (a mount on
// the same parent) sits on a directory above its mount point, because a
// path lookup enters the sibling before it reaches the mount; whatever
// hangs below a hidden mount is hidden too. A mount point is listed only
// if every mount on it is hidden: CRIU skips mounts by path.
func hidden(ms []jobns.Mount) []string {
	byID := map[int]jobns.Mount{}
	children := map[int][]jobns.Mount{}
	for _, m := range ms {
		byID[m.ID] = m
		children[m.Parent] = append(children[m.Parent], m)
	}
	covered := func(m jobns.Mount) bool {
		if m.Parent == m.ID {
			return false
		}
		for _, s := range children[m.Parent] {
			if s.ID != m.ID && under(m.Mountpoint, s.Mountpoint) {
				return true
			}
		}
		return false
	}
	isHidden := map[int]bool{}
	var walk func(m jobns.Mount, above bool)
	walk = func(m jobns.Mount, above bool) {
		h := above || covered(m)
		isHidden[m.ID] = h
		for _, c := range children[m.ID] {
			if c.ID != m.ID {
				walk(c, h)
			}
		}
	}
	for _, m := range ms {
		if _, ok := byID[m.Parent]; !ok || m.Parent == m.ID {
			walk(m, false)
		}
	}
	visible := map[string]bool{}
	for _, m := range ms {
		if !isHidden[m.ID] {
			visible[m.Mountpoint] = true
		}
	}
	var out []string
	seen := map[string]bool{}
	for _, m := range ms {
		if isHidden[m.ID] && !visible[m.Mountpoint] && !seen[m.Mountpoint] {
			seen[m.Mountpoint] = true
			out = append(out, m.Mountpoint)
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
