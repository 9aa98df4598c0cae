package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Snapshot records of the home tree: one config record, then every
// inode, every directory entry and every data block, each sorted. Usage
// is not stored: restore recomputes it from the inodes.

type snapHomeConfig struct {
	NextIno     uint64 `json:"next_ino"`
	MaxFileSize uint64 `json:"max_file_size"`
	Quota       uint64 `json:"quota"`
}

type snapHomeDirent struct {
	Parent uint64 `json:"parent"`
	Name   string `json:"name"`
	Ino    uint64 `json:"ino"`
}

type snapHomeBlock struct {
	Ino   uint64 `json:"ino"`
	Index uint64 `json:"index"`
	Data  []byte `json:"data"`
}

func writeHome(sw *snapWriter, h *homeState) {
	sw.record(recHomeConfig, snapHomeConfig{NextIno: h.nextIno, MaxFileSize: h.maxFileSize, Quota: h.quota})
	for _, ino := range slices.Sorted(maps.Keys(h.inodes)) {
		sw.record(recHomeInode, h.inodes[ino])
	}
	for _, parent := range slices.Sorted(maps.Keys(h.dirents)) {
		d := h.dirents[parent]
		for _, name := range slices.Sorted(maps.Keys(d)) {
			sw.record(recHomeDirent, snapHomeDirent{Parent: parent, Name: name, Ino: d[name]})
		}
	}
	for _, ino := range slices.Sorted(maps.Keys(h.blocks)) {
		b := h.blocks[ino]
		for _, idx := range slices.Sorted(maps.Keys(b)) {
			sw.record(recHomeBlock, snapHomeBlock{Ino: ino, Index: idx, Data: b[idx]})
		}
	}
}

// emptyHomeState is a home tree without even its root, for restore.
func emptyHomeState() *homeState {
	return &homeState{
		inodes:  map[uint64]*HomeInode{},
		dirents: map[uint64]map[string]uint64{},
		blocks:  map[uint64]map[uint64][]byte{},
	}
}

// addHomeRecord decodes one home record into h. Records come in the
// order writeHome writes them, so entries and blocks find their inodes.
func (h *homeState) addHomeRecord(typ byte, body []byte) error {
	switch typ {
	case recHomeConfig:
		var c snapHomeConfig
		if err := json.Unmarshal(body, &c); err != nil {
			return err
		}
		h.nextIno, h.maxFileSize, h.quota = c.NextIno, c.MaxFileSize, c.Quota
	case recHomeInode:
		in := new(HomeInode)
		if err := json.Unmarshal(body, in); err != nil {
			return err
		}
		if _, dup := h.inodes[in.Ino]; dup || in.Ino == 0 || !in.Type.valid() {
			return fmt.Errorf("bad or duplicate home inode %d", in.Ino)
		}
		h.inodes[in.Ino] = in
		switch in.Type {
		case HomeDir:
			h.dirents[in.Ino] = map[string]uint64{}
		case HomeFile:
			h.used += in.Size
		}
	case recHomeDirent:
		var e snapHomeDirent
		if err := json.Unmarshal(body, &e); err != nil {
			return err
		}
		d, ok := h.dirents[e.Parent]
		if !ok || h.inodes[e.Ino] == nil || !validName(e.Name) {
			return fmt.Errorf("home entry %q in %d: bad name, parent or inode", e.Name, e.Parent)
		}
		if _, dup := d[e.Name]; dup {
			return fmt.Errorf("duplicate home entry %q in %d", e.Name, e.Parent)
		}
		d[e.Name] = e.Ino
	case recHomeBlock:
		var b snapHomeBlock
		if err := json.Unmarshal(body, &b); err != nil {
			return err
		}
		in := h.inodes[b.Ino]
		if in == nil || in.Type != HomeFile || len(b.Data) == 0 || len(b.Data) > HomeBlockSize ||
			b.Index*HomeBlockSize+uint64(len(b.Data)) > in.Size {
			return fmt.Errorf("home block %d of inode %d does not fit", b.Index, b.Ino)
		}
		blocks := h.blocks[b.Ino]
		if blocks == nil {
			blocks = map[uint64][]byte{}
			h.blocks[b.Ino] = blocks
		}
		if _, dup := blocks[b.Index]; dup {
			return fmt.Errorf("duplicate home block %d of inode %d", b.Index, b.Ino)
		}
		blocks[b.Index] = b.Data
	default:
		return fmt.Errorf("unknown record type %d", typ)
	}
	return nil
}

// finish completes a restored home tree: a snapshot from before the home
// tree existed gets the empty root; otherwise the root must be there.
func (h *homeState) finish(hadHome bool) error {
	if !hadHome {
		h.ensureRoot()
		return nil
	}
	if r := h.inodes[HomeRootIno]; r == nil || r.Type != HomeDir {
		return errors.New("home tree without its root directory")
	}
	if h.nextIno <= HomeRootIno {
		return errors.New("home inode counter below the root")
	}
	return nil
}
