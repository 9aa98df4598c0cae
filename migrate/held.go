package migrate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
)

// FileRef is a file a tree holds on a mount that is not its own (the
// node's, or /cluster): by a descriptor, a mapping, as its executable or
// as a working directory. The destination opens it again, as the
// tree's owner, and checks it is the same.
type FileRef struct {
	Path string `json:"path"`
	Size int64  `json:"size"`
	// Key is CRIU's name of a regular file dumped as an external file,
	// "file[<mount id>:<inode>]" in hex as CRIU's dump_one_reg_file
	// spells it: the restore is handed the file under this name
	// (inherit_fd) and never opens its path. "" for other kinds.
	Key  string `json:"key,omitempty"`
	Dev  uint64 `json:"dev,omitempty"`
	Ino  uint64 `json:"ino,omitempty"`
	Mode uint32 `json:"mode,omitempty"` // st_mode: kind and permissions
	// Access is how the tree uses it: O_RDONLY, O_WRONLY or O_RDWR,
	// over all its descriptors and mappings.
	Access int `json:"access,omitempty"`
}

// HeldFilesName is the file a job's dump adds to its images: the
// FileRefs of what the frozen tree held, read while CRIU had it frozen.
// The destination checks what the images name against it.
const HeldFilesName = "ssi-files.json"

// OutsideFiles lists what the tree rooted at root holds outside its own
// mounts (see FileRef); a source describes a tree with it before the
// tree stops, for the destination's early check.
func OutsideFiles(root int) []FileRef {
	refs, _ := heldFiles(root)
	return refs
}

// heldFiles reads, for every process of the tree, its executable,
// working directory, descriptors and file mappings, and keeps those on
// a mount that is not one of the tree's own (jobns.Own).
func heldFiles(root int) ([]FileRef, error) {
	own, err := ownMountIDs(root)
	if err != nil {
		return nil, err
	}
	h := &held{own: own, at: map[string]int{}}
	for _, pid := range Tree(root) {
		h.add(fmt.Sprintf("/proc/%d/exe", pid), unix.O_RDONLY)
		h.add(fmt.Sprintf("/proc/%d/cwd", pid), unix.O_RDONLY)
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			h.add(fd, fdAccess(pid, filepath.Base(fd)))
		}
		for _, m := range fileMaps(pid) {
			h.add(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, m.start, m.end), m.access)
		}
	}
	return h.refs, nil
}

// held collects FileRefs, one per file.
type held struct {
	own  map[uint64]bool
	refs []FileRef
	at   map[string]int // key, or path for files without one -> index in refs
}

// add records what the /proc link names, if it is a file on a mount not
// the tree's own, used for access.
func (h *held) add(link string, access int) {
	path, deleted, err := fileName(link)
	// Pipes, sockets and anonymous inodes have no path; a deleted file
	// is either in the tree's own mounts or refused (CantMove).
	if err != nil || !strings.HasPrefix(path, "/") || deleted {
		return
	}
	var st unix.Statx_t
	if unix.Statx(unix.AT_FDCWD, link, 0, unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &st) != nil || h.own[st.Mnt_id] {
		return
	}
	ref := FileRef{Path: path, Size: int64(st.Size), Dev: unix.Mkdev(st.Dev_major, st.Dev_minor), Ino: st.Ino,
		Mode: uint32(st.Mode), Access: access}
	id := path
	if uint32(st.Mode)&unix.S_IFMT == unix.S_IFREG {
		ref.Key = fmt.Sprintf("file[%x:%x]", st.Mnt_id, st.Ino)
		id = ref.Key
	}
	if i, ok := h.at[id]; ok {
		h.refs[i].Access = union(h.refs[i].Access, access)
		return
	}
	h.at[id] = len(h.refs)
	h.refs = append(h.refs, ref)
}

// ownMountIDs are the IDs of the mounts of pid's mount namespace that are
// the job's own: their files travel inside the images.
func ownMountIDs(pid int) (map[uint64]bool, error) {
	ms, err := jobns.Mounts(pid)
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	for _, m := range ms {
		if jobns.Own(m.Mountpoint, m.FSType) {
			out[uint64(m.ID)] = true
		}
	}
	return out, nil
}

// fdAccess is the access mode pid's descriptor fd was opened with.
func fdAccess(pid int, fd string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return unix.O_RDONLY
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "flags:"); ok {
			f, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return accessOf(uint32(f))
		}
	}
	return unix.O_RDONLY
}

// fileMap is a mapping of a file: its range and what the mapping needs
// of the file (O_RDWR for a shared writable one).
type fileMap struct {
	start, end uint64
	access     int
}

// fileMaps lists pid's mappings of files.
func fileMaps(pid int) []fileMap {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil
	}
	defer fh.Close()
	var out []fileMap
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || f[4] == "0" || !strings.HasPrefix(f[5], "/") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		m := fileMap{start: start, end: end, access: unix.O_RDONLY}
		if strings.HasPrefix(f[1], "rw") && strings.HasSuffix(f[1], "s") {
			m.access = unix.O_RDWR
		}
		out = append(out, m)
	}
	return out
}

// writeHeldFiles records refs in the images directory dir.
func writeHeldFiles(dir string, refs []FileRef) error {
	b, err := json.Marshal(refs)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, HeldFilesName)
	// The directory belonged to the tree's user during the dump: never
	// follow or reuse what may have been left there.
	_ = os.Remove(p)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// readHeldFiles reads what a dump recorded in dir, by key and by path.
func readHeldFiles(dir string) (map[string]FileRef, error) {
	b, err := os.ReadFile(filepath.Join(dir, HeldFilesName))
	if err != nil {
		return nil, fmt.Errorf("%w: the images do not say what the process held (%v)", ErrUnsafeFile, err)
	}
	var refs []FileRef
	if err := json.Unmarshal(b, &refs); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnsafeFile, HeldFilesName, err)
	}
	out := map[string]FileRef{}
	for _, r := range refs {
		if r.Key != "" {
			out[r.Key] = r
		}
		out[r.Path] = r
	}
	return out, nil
}
