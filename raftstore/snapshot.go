package raftstore

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Snapshot format: an 8-byte magic and a 2-byte big-endian format version,
// then framed records, each
//
//	type (1 byte) | length (4 bytes, big endian) | JSON body | CRC-32C of the preceding three
//
// and last an end record whose body counts the records before it, so a
// truncated snapshot is refused rather than half restored.
//
// Record type numbers are append-only, like command types: a snapshot
// written today may be read by a binary written years later.
const (
	snapMagic   = "SSISNAP\x00"
	snapVersion = 1
	// maxRecord bounds one record so corrupt lengths cannot exhaust memory.
	maxRecord = 64 << 20
)

// Snapshot record types. Append only.
const (
	recEnd        byte = 0
	recCounters   byte = 1
	recNode       byte = 2
	recProc       byte = 3
	recMigration  byte = 4
	recToken      byte = 5
	recHomeConfig byte = 6
	recHomeInode  byte = 7
	recHomeDirent byte = 8
	recHomeBlock  byte = 9
	recEnded      byte = 10
	recMove       byte = 11
	recCert       byte = 12
	recOnce       byte = 13
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type snapCounters struct {
	NextCPID int    `json:"next_cpid"`
	Applied  uint64 `json:"applied"`
}

type snapEnd struct {
	Records int `json:"records"`
}

// snapWriter keeps the first error and ignores records after it, so
// writeSnapshot checks once at the end.
type snapWriter struct {
	w   *bufio.Writer
	n   int
	err error
}

func (sw *snapWriter) record(typ byte, v any) {
	if sw.err == nil {
		sw.err = sw.write(typ, v)
	}
}

func (sw *snapWriter) write(typ byte, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("snapshot record %d: %w", typ, err)
	}
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	crc := crc32.Update(crc32.Checksum(hdr[:], crcTable), crcTable, body)
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc)
	for _, b := range [][]byte{hdr[:], body, sum[:]} {
		if _, err := sw.w.Write(b); err != nil {
			return fmt.Errorf("write snapshot: %w", err)
		}
	}
	sw.n++
	return nil
}

// writeSnapshot writes st to w in the format above.
func writeSnapshot(w io.Writer, st *state) error {
	sw := &snapWriter{w: bufio.NewWriter(w)}
	var hdr [len(snapMagic) + 2]byte
	copy(hdr[:], snapMagic)
	binary.BigEndian.PutUint16(hdr[len(snapMagic):], snapVersion)
	if _, err := sw.w.Write(hdr[:]); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	sw.record(recCounters, snapCounters{NextCPID: st.nextCPID, Applied: st.applied})
	for _, n := range st.nodeList() {
		sw.record(recNode, n)
	}
	for _, p := range st.procList() {
		sw.record(recProc, p)
	}
	for _, m := range st.migrationList() {
		sw.record(recMigration, m)
	}
	for _, t := range st.tokenList() {
		sw.record(recToken, t)
	}
	for _, c := range st.certList() {
		sw.record(recCert, c)
	}
	writeHome(sw, st.home)
	for _, e := range st.ended {
		sw.record(recEnded, e)
	}
	for _, m := range st.moves {
		sw.record(recMove, m)
	}
	for _, r := range st.once.records() {
		sw.record(recOnce, r)
	}
	sw.record(recEnd, snapEnd{Records: sw.n})
	if sw.err != nil {
		return sw.err
	}
	if err := sw.w.Flush(); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	return nil
}

// readSnapshot decodes a snapshot into a fresh state. Errors wrap
// ErrBadSnapshot.
func readSnapshot(r io.Reader) (*state, error) {
	br := bufio.NewReader(r)
	var hdr [len(snapMagic) + 2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("snapshot header: %v: %w", err, ErrBadSnapshot)
	}
	if string(hdr[:len(snapMagic)]) != snapMagic {
		return nil, fmt.Errorf("snapshot header: bad magic: %w", ErrBadSnapshot)
	}
	if v := binary.BigEndian.Uint16(hdr[len(snapMagic):]); v != snapVersion {
		return nil, fmt.Errorf("snapshot format version %d, want %d: %w", v, snapVersion, ErrBadSnapshot)
	}
	st := newState()
	st.home = emptyHomeState()
	hadHome := false
	for n := 0; ; n++ {
		typ, body, err := readRecord(br)
		if err != nil {
			return nil, fmt.Errorf("snapshot record %d: %v: %w", n, err, ErrBadSnapshot)
		}
		if typ == recEnd {
			var end snapEnd
			if err := json.Unmarshal(body, &end); err != nil || end.Records != n {
				return nil, fmt.Errorf("snapshot end: %d records, end record says otherwise: %w", n, ErrBadSnapshot)
			}
			if err := st.home.finish(hadHome); err != nil {
				return nil, fmt.Errorf("snapshot: %v: %w", err, ErrBadSnapshot)
			}
			return st, nil
		}
		hadHome = hadHome || typ == recHomeConfig
		if err := st.addRecord(typ, body); err != nil {
			return nil, fmt.Errorf("snapshot record %d: %v: %w", n, err, ErrBadSnapshot)
		}
	}
}

func readRecord(br *bufio.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(hdr[1:])
	if size > maxRecord {
		return 0, nil, fmt.Errorf("record of %d bytes", size)
	}
	buf := make([]byte, size+4)
	if _, err := io.ReadFull(br, buf); err != nil {
		return 0, nil, err
	}
	body, sum := buf[:size], binary.BigEndian.Uint32(buf[size:])
	if crc32.Update(crc32.Checksum(hdr[:], crcTable), crcTable, body) != sum {
		return 0, nil, errors.New("checksum mismatch")
	}
	return hdr[0], body, nil
}

// addRecord decodes one record into st, refusing duplicates and record
// types this binary does not know (a snapshot from a newer ssi).
func (st *state) addRecord(typ byte, body []byte) error {
	switch typ {
	case recCounters:
		var c snapCounters
		if err := json.Unmarshal(body, &c); err != nil {
			return err
		}
		st.nextCPID, st.applied = c.NextCPID, c.Applied
	case recNode:
		return addUnique(st.nodes, body, func(n *Node) string { return n.Name })
	case recProc:
		return addUnique(st.procs, body, func(p *Proc) int { return p.CPID })
	case recMigration:
		return addUnique(st.migrations, body, func(m *Migration) int { return m.CPID })
	case recToken:
		var t TokenHash
		if err := json.Unmarshal(body, &t); err != nil {
			return err
		}
		if _, dup := st.tokens[t.Hash]; dup {
			return errors.New("duplicate token")
		}
		st.tokens[t.Hash] = t
	case recCert:
		var c Cert
		if err := json.Unmarshal(body, &c); err != nil {
			return err
		}
		if _, dup := st.certs[c.Serial]; dup {
			return errors.New("duplicate certificate")
		}
		st.certs[c.Serial] = c
	case recHomeConfig, recHomeInode, recHomeDirent, recHomeBlock:
		return st.home.addHomeRecord(typ, body)
	case recEnded:
		var e Ended
		if err := json.Unmarshal(body, &e); err != nil {
			return err
		}
		st.ended = append(st.ended, e)
	case recMove:
		var m MoveRecord
		if err := json.Unmarshal(body, &m); err != nil {
			return err
		}
		st.moves = append(st.moves, m)
	case recOnce:
		var r onceRecord
		if err := json.Unmarshal(body, &r); err != nil {
			return err
		}
		if _, dup := st.once.get(r.ID); dup || r.ID == "" {
			return errors.New("duplicate or empty once id")
		}
		st.once.put(r)
	default:
		return fmt.Errorf("unknown record type %d", typ)
	}
	return nil
}

func addUnique[K comparable, V any](m map[K]*V, body []byte, key func(*V) K) error {
	v := new(V)
	if err := json.Unmarshal(body, v); err != nil {
		return err
	}
	k := key(v)
	if _, dup := m[k]; dup {
		return fmt.Errorf("duplicate record %v", k)
	}
	m[k] = v
	return nil
}
