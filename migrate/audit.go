package migrate

import (
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// audit looks at the tree CRIU restored (stopped: none of it has run)
// and fails unless every regular file and directory it holds outside its
// own mounts (descriptors, mappings, executables, working directories)
// is an inode the check vetted. It is the net under the check: whatever
// CRIU opened by path that the check did not foresee, or that changed
// between the check and CRIU's open, is caught before the tree runs.
func (v *vetted) audit(root int) error {
	own, err := ownMountIDs(root)
	if err != nil {
		return fmt.Errorf("%w: reading the restored tree's mounts: %v", ErrUnsafeFile, err)
	}
	for _, pid := range Tree(root) {
		links := []string{fmt.Sprintf("/proc/%d/exe", pid), fmt.Sprintf("/proc/%d/cwd", pid)}
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		maps, _ := filepath.Glob(fmt.Sprintf("/proc/%d/map_files/*", pid))
		for _, l := range append(append(links, fds...), maps...) {
			if err := v.auditLink(l, own); err != nil {
				return fmt.Errorf("%w: restored pid %d holds %s, which was not checked", ErrUnsafeFile, pid, err)
			}
		}
	}
	return nil
}

// auditLink checks what one /proc link of a restored task names.
func (v *vetted) auditLink(link string, own map[uint64]bool) error {
	path, deleted, err := fileName(link)
	if err != nil || !strings.HasPrefix(path, "/") || deleted {
		// Pipes, sockets, anonymous inodes; a deleted file is a ghost
		// CRIU made in the tree's own mounts (the check refuses others).
		// A file only marked deleted (fileName) is checked.
		return nil
	}
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, link, 0, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &st); err != nil {
		return nil
	}
	kind := uint32(st.Mode) & unix.S_IFMT
	if own[st.Mnt_id] || kind != unix.S_IFREG && kind != unix.S_IFDIR {
		return nil
	}
	if !v.ok[devIno{unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino}] {
		return fmt.Errorf("%s", path)
	}
	return nil
}
