package migrate

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	imgfs "github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// imageFiles is what a checkpoint's images say CRIU will open at
// restore: the files (files.img), what the mappings need of them
// (mm-*.img), the working directories (fs-*.img), and who the tasks ran
// as (core-*.img).
type imageFiles struct {
	files []*fdinfo.FileEntry
	// needs is the access each regular file's mappings need, by file id.
	needs map[uint32]int
	// cwd marks the file ids that are a task's working directory.
	cwd map[uint32]bool
	// creds of every thread; root is the tree's root task's.
	creds []taskCred
	root  taskCred
}

// taskCred is who a thread ran as.
type taskCred struct {
	pid                    uint32
	uid, euid, suid, fsuid uint32
	gid                    uint32
	groups                 []uint32
}

// CRIU's image magics that precede the image's own (criu/include/magic.h).
const (
	imgCommonMagic  = 0x54564319
	imgServiceMagic = 0x55105940
	// maxImageEntry bounds one entry: images come from another node.
	maxImageEntry = 16 << 20
)

// VMA status bits (criu/include/image.h).
const (
	vmaFileShared = 1 << 7
	vmaFilePriv   = 1 << 6
	vmaMemfd      = 1 << 14
)

// readImageFiles reads the images in dir.
func readImageFiles(dir string) (*imageFiles, error) {
	im := &imageFiles{needs: map[uint32]int{}, cwd: map[uint32]bool{}}
	err := readImage(filepath.Join(dir, "files.img"), func() proto.Message { return &fdinfo.FileEntry{} },
		func(m proto.Message) { im.files = append(im.files, m.(*fdinfo.FileEntry)) })
	if err != nil {
		return nil, err
	}
	if err := im.readMaps(dir); err != nil {
		return nil, err
	}
	if err := im.readCreds(dir); err != nil {
		return nil, err
	}
	return im, nil
}

// readMaps reads what the mappings need and the working directories.
func (im *imageFiles) readMaps(dir string) error {
	mms, _ := filepath.Glob(filepath.Join(dir, "mm-*.img"))
	for _, p := range mms {
		err := readImage(p, func() proto.Message { return &mm.MmEntry{} }, func(m proto.Message) {
			e := m.(*mm.MmEntry)
			im.need(e.GetExeFileId(), unix.O_RDONLY)
			for _, v := range e.GetVmas() {
				st := v.GetStatus()
				if st&(vmaFileShared|vmaFilePriv) == 0 || st&vmaMemfd != 0 {
					continue
				}
				access := unix.O_RDONLY
				if v.Fdflags != nil {
					access = accessOf(v.GetFdflags())
				} else if st&vmaFileShared != 0 && v.GetProt()&unix.PROT_WRITE != 0 {
					access = unix.O_RDWR
				}
				im.need(uint32(v.GetShmid()), access)
			}
		})
		if err != nil {
			return err
		}
	}
	fss, _ := filepath.Glob(filepath.Join(dir, "fs-*.img"))
	for _, p := range fss {
		err := readImage(p, func() proto.Message { return &imgfs.FsEntry{} }, func(m proto.Message) {
			im.cwd[m.(*imgfs.FsEntry).GetCwdId()] = true
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// need records that file id is opened for access by a mapping.
func (im *imageFiles) need(id uint32, access int) {
	if a, ok := im.needs[id]; ok {
		access = union(a, access)
	}
	im.needs[id] = access
}

// readCreds reads every thread's credentials, and finds the root task's
// (the first entry of pstree.img).
func (im *imageFiles) readCreds(dir string) error {
	var rootPid uint32
	err := readImage(filepath.Join(dir, "pstree.img"), func() proto.Message { return &pstree.PstreeEntry{} },
		func(m proto.Message) {
			if rootPid == 0 {
				rootPid = m.(*pstree.PstreeEntry).GetPid()
			}
		})
	if err != nil {
		return err
	}
	cores, _ := filepath.Glob(filepath.Join(dir, "core-*.img"))
	for _, p := range cores {
		var pid uint32
		if _, err := fmt.Sscanf(filepath.Base(p), "core-%d.img", &pid); err != nil {
			continue
		}
		err := readImage(p, func() proto.Message { return &criucore.CoreEntry{} }, func(m proto.Message) {
			c := m.(*criucore.CoreEntry).GetThreadCore().GetCreds()
			if c == nil {
				return
			}
			tc := taskCred{pid: pid, uid: c.GetUid(), euid: c.GetEuid(), suid: c.GetSuid(), fsuid: c.GetFsuid(),
				gid: c.GetGid(), groups: c.GetGroups()}
			im.creds = append(im.creds, tc)
			if pid == rootPid {
				im.root = tc
			}
		})
		if err != nil {
			return err
		}
	}
	if rootPid == 0 || im.root.pid != rootPid {
		return fmt.Errorf("%w: the images name no credentials for the root task", ErrUnsafeFile)
	}
	return nil
}

// readImage calls each with every entry of the CRIU image at path, each
// decoded into a fresh message from newMsg.
func readImage(path string, newMsg func() proto.Message, each func(proto.Message)) error {
	opts := proto.UnmarshalOptions{DiscardUnknown: true, AllowPartial: true}
	_, err := scanImage(path, func(raw []byte) error {
		m := newMsg()
		if err := opts.Unmarshal(raw, m); err != nil {
			return err
		}
		each(m)
		return nil
	})
	return err
}

// scanImage calls each with every entry of the CRIU image at path, raw,
// and returns the image's magic header.
func scanImage(path string, each func(raw []byte) error) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the images: %v", ErrUnsafeFile, err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	bad := func(err error) error {
		return fmt.Errorf("%w: image %s: %v", ErrUnsafeFile, filepath.Base(path), err)
	}
	head := make([]byte, 4, 8)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, bad(err)
	}
	if m := binary.LittleEndian.Uint32(head); m == imgCommonMagic || m == imgServiceMagic {
		head = head[:8]
		if _, err := io.ReadFull(r, head[4:]); err != nil {
			return nil, bad(err)
		}
	}
	var word [4]byte
	for {
		if _, err := io.ReadFull(r, word[:]); errors.Is(err, io.EOF) {
			return head, nil
		} else if err != nil {
			return nil, bad(err)
		}
		n := binary.LittleEndian.Uint32(word[:])
		if n > maxImageEntry {
			return nil, bad(fmt.Errorf("an entry of %d bytes", n))
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, bad(err)
		}
		if err := each(buf); err != nil {
			return nil, bad(err)
		}
	}
}

// reopenable clears O_NOFOLLOW from the external files of files.img in
// dir. CRIU reopens an external file through the /proc/self/fd link of
// the descriptor it is handed, with the flags the descriptor had; one
// opened with O_NOFOLLOW (sqlite opens its databases so) would fail with
// ELOOP on the link. The flag only ever mattered to the first open.
func reopenable(dir string) error {
	path := filepath.Join(dir, "files.img")
	var out []byte
	changed := false
	// Unknown fields are kept: a newer CRIU's survive the rewrite.
	opts := proto.UnmarshalOptions{AllowPartial: true}
	head, err := scanImage(path, func(raw []byte) error {
		fe := &fdinfo.FileEntry{}
		if err := opts.Unmarshal(raw, fe); err != nil {
			return err
		}
		if r := fe.GetReg(); r.GetExt() && r.GetFlags()&unix.O_NOFOLLOW != 0 {
			r.Flags = proto.Uint32(r.GetFlags() &^ unix.O_NOFOLLOW)
			b, err := proto.MarshalOptions{AllowPartial: true}.Marshal(fe)
			if err != nil {
				return err
			}
			raw, changed = b, true
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(raw)))
		out = append(out, raw...)
		return nil
	})
	if err != nil || !changed {
		return err
	}
	tmp := path + ".ssi"
	if err := os.WriteFile(tmp, append(head, out...), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
