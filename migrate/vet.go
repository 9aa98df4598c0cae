package migrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
)

// FileCheck is how a restore checks the files the images name before
// CRIU, running as root, gets them (RestoreOptions.Files). Every file and
// unix socket path outside the tree's own mounts is opened again relative
// to "/" without following any link and with the owner's rights; a
// regular file is then handed to CRIU open (inherit_fd, under the key it
// was dumped as external with), so that CRIU never opens its path.
type FileCheck struct {
	// UID owns the tree (the agreed state says so): every task of the
	// images must run as it, and files are opened with its rights and
	// the groups of the tree's root task.
	UID uint32
	// Shared is the directory every node sees as one file system
	// ("/cluster/"): a file there must be the very inode the dump
	// recorded, on this node's mount of it.
	Shared string
	// Trusted are files of the node's own that jobs hold, in directories
	// only root may enter (the job init): opened as root, still without
	// following a link.
	Trusted []string
}

// devIno names an inode.
type devIno struct{ dev, ino uint64 }

func statID(st unix.Stat_t) devIno { return devIno{st.Dev, st.Ino} }

// vetted is what a check opened: the files CRIU inherits, and the inodes
// (files and directories) the restored tree may hold outside its own
// mounts.
type vetted struct {
	inherit []InheritFD
	ok      map[devIno]bool
}

func (v *vetted) close() {
	for _, f := range v.inherit {
		f.File.Close()
	}
}

// checker opens files for a check, as one identity.
type checker struct {
	fc        FileCheck
	cred      Cred
	sharedDev uint64 // st_dev of this node's mount of fc.Shared
	v         *vetted
}

func newChecker(fc FileCheck, cred Cred) (*checker, error) {
	k := &checker{fc: fc, cred: cred, v: &vetted{ok: map[devIno]bool{}}}
	if fc.Shared != "" {
		var st unix.Stat_t
		if err := unix.Stat(fc.Shared, &st); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrUnsafeFile, fc.Shared, err)
		}
		k.sharedDev = st.Dev
	}
	// The restored tree's root directory is this node's.
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err == nil {
		k.v.ok[statID(st)] = true
	}
	return k, nil
}

// run calls fn as the owner, then trusted as root.
func (k *checker) run(fn func(trusted bool) error) error {
	if err := asCred(k.cred, func() error { return fn(false) }); err != nil {
		return err
	}
	return fn(true)
}

func (k *checker) trusted(p string) bool { return slices.Contains(k.fc.Trusted, p) }

func (k *checker) shared(p string) bool {
	return k.fc.Shared != "" && strings.HasPrefix(p, strings.TrimSuffix(k.fc.Shared, "/")+"/")
}

// same fails unless st, found at ref.Path now, is what the dump
// recorded: the same kind, and under Shared the same inode.
func (k *checker) same(ref FileRef, st unix.Stat_t) error {
	if st.Mode&unix.S_IFMT != ref.Mode&unix.S_IFMT {
		return fmt.Errorf("%w: %s is %s now, %s at dump", ErrUnsafeFile, ref.Path, kindName(st.Mode), kindName(ref.Mode))
	}
	if k.shared(ref.Path) && (st.Ino != ref.Ino || st.Dev != k.sharedDev) {
		return fmt.Errorf("%w: %s is another file than at dump (inode %d, not %d)", ErrUnsafeFile, ref.Path, st.Ino, ref.Ino)
	}
	return nil
}

// openRegular opens the regular file ref for access and checks it.
func (k *checker) openRegular(ref FileRef, access int) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	p, err := openPath(ref.Path, false)
	if err != nil {
		return nil, st, err
	}
	defer p.Close()
	if st, err = fstat(p); err != nil {
		return nil, st, err
	}
	if err := k.same(ref, st); err != nil {
		return nil, st, err
	}
	f, err := reopen(p, access)
	if err != nil {
		return nil, st, err
	}
	if st2, err := fstat(f); err != nil || statID(st2) != statID(st) {
		f.Close()
		return nil, st, fmt.Errorf("%w: %s changed while it was opened", ErrUnsafeFile, ref.Path)
	}
	return f, st, nil
}

// checkOther checks a file CRIU opens by path itself (a directory, a
// device, a FIFO): no link in its path, the kind the images say, and the
// rights its use needs (search for a working directory), through
// faccessat: nothing is opened but an O_PATH descriptor.
func (k *checker) checkOther(ref FileRef, want int) error {
	p, err := openPath(ref.Path, false)
	if err != nil {
		return err
	}
	defer p.Close()
	st, err := fstat(p)
	if err != nil {
		return err
	}
	if err := k.same(ref, st); err != nil {
		return err
	}
	if err := unix.Faccessat2(int(p.Fd()), "", uint32(want), unix.AT_EMPTY_PATH|unix.AT_EACCESS); err != nil {
		return fmt.Errorf("%w: %s: %s", ErrUnsafeFile, ref.Path, openError(err))
	}
	k.v.ok[statID(st)] = true
	return nil
}

// accessRights is what faccessat must allow for an access mode.
func accessRights(access int) int {
	switch access {
	case unix.O_WRONLY:
		return unix.W_OK
	case unix.O_RDWR:
		return unix.R_OK | unix.W_OK
	}
	return unix.R_OK
}

// checkSocket checks where CRIU will bind a unix socket of the tree, as
// root: the directory must be reachable without a link and writable by
// the owner, and what is there already may only be a socket of the
// owner's (CRIU unlinks it first).
func (k *checker) checkSocket(path string) error {
	d, err := openPath(filepath.Dir(path), true)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Faccessat2(int(d.Fd()), "", unix.W_OK|unix.X_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS); err != nil {
		return fmt.Errorf("%w: socket %s: %s", ErrUnsafeFile, path, openError(err))
	}
	var st unix.Stat_t
	err = unix.Fstatat(int(d.Fd()), filepath.Base(path), &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return fmt.Errorf("%w: socket %s: %v", ErrUnsafeFile, path, err)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Uid != k.cred.UID:
		return fmt.Errorf("%w: socket %s: %s of uid %d is in its place", ErrUnsafeFile, path, kindName(st.Mode), st.Uid)
	}
	return nil
}

// ownPath reports whether p lies in one of a job's own mounts, which the
// images carry and CRIU restores inside the tree's new mount namespace.
func ownPath(p string) bool {
	for _, pre := range append(jobns.OwnPrefixes(), "/proc/") {
		if p == strings.TrimSuffix(pre, "/") || strings.HasPrefix(p, pre) {
			return true
		}
	}
	return false
}

// CheckFiles says, one line each, why this node cannot give a process
// the files want lists (a source's OutsideFiles) as c: missing, a link
// in the path, rights c lacks, another kind, another size (files only
// read), another inode under shared. It opens nothing but O_PATH
// descriptors. A destination asks it before the process stops; the
// restore checks again, definitively (RestoreOptions.Files).
func CheckFiles(want []FileRef, c Cred, shared string, trusted []string) []string {
	k, err := newChecker(FileCheck{UID: c.UID, Shared: shared, Trusted: trusted}, c)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	_ = k.run(func(asRoot bool) error {
		for _, ref := range want {
			if k.trusted(ref.Path) != asRoot {
				continue
			}
			if why := k.early(ref); why != "" {
				out = append(out, why)
			}
		}
		return nil
	})
	return out
}

// early is CheckFiles for one file.
func (k *checker) early(ref FileRef) string {
	want := accessRights(ref.Access)
	if ref.Mode&unix.S_IFMT == unix.S_IFDIR {
		want = unix.X_OK
	}
	if err := k.checkOther(ref, want); err != nil {
		return strings.TrimPrefix(err.Error(), ErrUnsafeFile.Error()+": ")
	}
	if ref.Mode&unix.S_IFMT != unix.S_IFREG || ref.Access != unix.O_RDONLY || k.shared(ref.Path) {
		return ""
	}
	var st unix.Stat_t
	if err := unix.Stat(ref.Path, &st); err == nil && st.Size != ref.Size {
		return fmt.Sprintf("%s has %d bytes, not %d", ref.Path, st.Size, ref.Size)
	}
	return ""
}

// vetFiles checks, in the images in dir, every file CRIU would open
// outside the tree's own mounts, and opens the regular ones for CRIU.
func vetFiles(dir string, fc FileCheck) (*vetted, error) {
	im, err := readImageFiles(dir)
	if err != nil {
		return nil, err
	}
	for _, c := range im.creds {
		if c.uid != fc.UID || c.euid != fc.UID || c.suid != fc.UID || c.fsuid != fc.UID {
			return nil, fmt.Errorf("%w: task %d of the images runs as uid %d, its owner is %d", ErrUnsafeFile, c.pid, c.euid, fc.UID)
		}
	}
	held, err := readHeldFiles(dir)
	if err != nil {
		return nil, err
	}
	k, err := newChecker(fc, Cred{UID: fc.UID, GID: im.root.gid, Groups: im.root.groups})
	if err != nil {
		return nil, err
	}
	plan, err := planFiles(im, held)
	if err != nil {
		return nil, err
	}
	err = k.run(func(asRoot bool) error { return k.vet(plan, asRoot) })
	if err == nil {
		err = reopenable(dir)
	}
	if err != nil {
		k.v.close()
		return nil, err
	}
	return k.v, nil
}

// planned is one file of the images to check: a regular file dumped as
// external (key set, handed to CRIU) or one CRIU opens by path.
type planned struct {
	ref      FileRef
	key      string
	access   int  // what every use needs
	cwd      bool // someone's working directory: search rights
	pathOnly bool // only O_PATH descriptors: no rights on the file itself
	socket   bool // a unix socket's path, bound by CRIU
}

// planFiles lists what vet must check, from the images and what the dump
// recorded (held): a file the dump did not record is refused.
func planFiles(im *imageFiles, held map[string]FileRef) ([]*planned, error) {
	var plan []*planned
	byKey := map[string]*planned{}
	for _, fe := range im.files {
		switch fe.GetType() {
		case fdinfo.FdTypes_REG:
			p, err := planRegular(fe, im, held, byKey)
			if err != nil {
				return nil, err
			}
			if p != nil {
				plan = append(plan, p)
			}
		case fdinfo.FdTypes_UNIXSK:
			if p := planSocket(fe); p != nil {
				plan = append(plan, p)
			}
		}
	}
	return plan, nil
}

// planRegular plans a file entry of CRIU's "regular" kind: files,
// directories, devices and FIFOs opened by name. nil: nothing to check.
func planRegular(fe *fdinfo.FileEntry, im *imageFiles, held map[string]FileRef, byKey map[string]*planned) (*planned, error) {
	r := fe.GetReg()
	access := accessOf(r.GetFlags())
	if a, ok := im.needs[r.GetId()]; ok {
		access = union(access, a)
	}
	if r.GetExt() {
		ref, ok := held[r.GetName()]
		if !ok || ref.Mode&unix.S_IFMT != unix.S_IFREG {
			return nil, fmt.Errorf("%w: the images name an external file its dump did not record (%s)", ErrUnsafeFile, r.GetName())
		}
		if p, ok := byKey[ref.Key]; ok {
			p.access = union(p.access, access)
			return nil, nil
		}
		byKey[ref.Key] = &planned{ref: ref, key: ref.Key, access: access}
		return byKey[ref.Key], nil
	}
	name := r.GetName()
	if name == "/" || ownPath(name) {
		return nil, nil
	}
	ref, ok := held[name]
	if !ok {
		ref = FileRef{Path: name, Mode: r.GetMode()}
	}
	switch r.GetMode() & unix.S_IFMT {
	case unix.S_IFREG:
		// Dumped by path although on a node mount: held after the tree
		// froze, or deleted. CRIU would open or create it as root.
		return nil, fmt.Errorf("%w: %s was not recorded at dump (opened or deleted as it froze); try again", ErrUnsafeFile, name)
	case 0:
		return nil, fmt.Errorf("%w: %s: the images give no kind", ErrUnsafeFile, name)
	}
	ref.Mode = r.GetMode()
	p := &planned{ref: ref, access: access, cwd: im.cwd[r.GetId()]}
	// An O_PATH descriptor needs no rights on the file itself.
	_, mapped := im.needs[r.GetId()]
	p.pathOnly = r.GetFlags()&unix.O_PATH != 0 && !mapped
	return p, nil
}

// planSocket plans a unix socket bound to a path outside the tree's own
// mounts (nil for an abstract or unnamed one).
func planSocket(fe *fdinfo.FileEntry) *planned {
	u := fe.GetUsk()
	name := string(u.GetName())
	if name == "" || name[0] == 0 {
		return nil
	}
	if !strings.HasPrefix(name, "/") {
		name = filepath.Join(u.GetNameDir(), name)
	}
	if ownPath(name) {
		return nil
	}
	return &planned{ref: FileRef{Path: name}, socket: true}
}

// vet checks and opens plan's files that are trusted (asRoot) or not.
func (k *checker) vet(plan []*planned, asRoot bool) error {
	for _, p := range plan {
		if k.trusted(p.ref.Path) != asRoot {
			continue
		}
		var err error
		switch {
		case p.socket:
			err = k.checkSocket(p.ref.Path)
		case p.key != "":
			var f *os.File
			var st unix.Stat_t
			if f, st, err = k.openRegular(p.ref, p.access); err == nil {
				k.v.inherit = append(k.v.inherit, InheritFD{Key: p.key, File: f})
				k.v.ok[statID(st)] = true
			}
		case p.cwd:
			err = k.checkOther(p.ref, unix.X_OK)
		case p.pathOnly:
			err = k.checkOther(p.ref, unix.F_OK)
		default:
			err = k.checkOther(p.ref, accessRights(p.access))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
