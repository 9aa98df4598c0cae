package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Once applies Cmd at most once per ID. A follower forwards a command to
// the leader over HTTP; when the answer is lost (a connection reset, a
// timeout) the command may or may not be in the log, and the follower
// sends it again. Wrapped in Once with the same ID, the second copy is
// not applied again: it answers what the first one did. Without it a
// HomeCreate sent twice would answer EEXIST for a file it made, and a
// TokenUse would spend two uses.
type Once struct {
	ID  string
	Cmd Command
}

// Type implements Command.
func (Once) Type() CommandType { return CmdOnce }
func (Once) isCommand()        {}

// maxOnceID bounds an ID; keepOnce is how many IDs the state remembers:
// a resend comes within seconds, and thousands of commands a second
// would be needed to forget one in time.
const (
	maxOnceID = 64
	keepOnce  = 4096
)

type onceBody struct {
	ID  string `json:"id"`
	Cmd []byte `json:"cmd"` // the command, as EncodeCommand makes it
}

func encodeOnce(c Command) ([]byte, error) {
	o := c.(Once)
	if err := checkOnce(o.ID, o.Cmd); err != nil {
		return nil, err
	}
	inner, err := EncodeCommand(o.Cmd)
	if err != nil {
		return nil, err
	}
	return json.Marshal(onceBody{ID: o.ID, Cmd: inner})
}

func decodeOnce(body []byte) (Command, error) {
	var b onceBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return nil, err
	}
	if len(b.Cmd) > 0 && CommandType(b.Cmd[0]) == CmdOnce {
		return nil, errors.New("a once inside a once")
	}
	inner, err := DecodeCommand(b.Cmd)
	if err != nil {
		return nil, err
	}
	if err := checkOnce(b.ID, inner); err != nil {
		return nil, err
	}
	return Once{ID: b.ID, Cmd: inner}, nil
}

func checkOnce(id string, cmd Command) error {
	if id == "" || len(id) > maxOnceID {
		return fmt.Errorf("once: an id of %d bytes (1 to %d)", len(id), maxOnceID)
	}
	if _, nested := cmd.(Once); nested || cmd == nil {
		return errors.New("once: no command, or a once inside a once")
	}
	return nil
}

// onceRecord is what a command applied under an ID answered.
type onceRecord struct {
	ID   string `json:"id"`
	CPID int    `json:"cpid,omitempty"`
	Ino  uint64 `json:"ino,omitempty"`
	Code string `json:"code,omitempty"` // ErrorCode of its error
	Msg  string `json:"msg,omitempty"`
}

func (r onceRecord) result() applyResult {
	return applyResult{cpid: r.CPID, ino: r.Ino, err: ErrorFromCode(r.Code, r.Msg)}
}

// onceTable is the last keepOnce records, oldest first. It is part of
// the state (and of snapshots): every replica must decide alike whether
// a copy is a resend.
type onceTable struct {
	order []string
	byID  map[string]onceRecord
}

func (t *onceTable) get(id string) (onceRecord, bool) {
	r, ok := t.byID[id]
	return r, ok
}

func (t *onceTable) put(r onceRecord) {
	if t.byID == nil {
		t.byID = map[string]onceRecord{}
	}
	t.order = append(t.order, r.ID)
	t.byID[r.ID] = r
	if len(t.order) > keepOnce {
		delete(t.byID, t.order[0])
		t.order = t.order[1:]
	}
}

func (t *onceTable) clone() onceTable {
	if t.byID == nil {
		return onceTable{}
	}
	c := onceTable{order: append([]string(nil), t.order...), byID: make(map[string]onceRecord, len(t.byID))}
	for k, v := range t.byID {
		c.byID[k] = v
	}
	return c
}

// records are the table's records, oldest first, for a snapshot.
func (t *onceTable) records() []onceRecord {
	out := make([]onceRecord, 0, len(t.order))
	for _, id := range t.order {
		out = append(out, t.byID[id])
	}
	return out
}

// applyOnce applies o.Cmd with apply unless its ID was applied already.
func applyOnce(s *state, o Once, apply func(Command) applyResult) applyResult {
	if r, ok := s.once.get(o.ID); ok {
		return r.result()
	}
	res := apply(o.Cmd)
	s.once.put(onceRecord{ID: o.ID, CPID: res.cpid, Ino: res.ino, Code: ErrorCode(res.err), Msg: errMsg(res.err)})
	return res
}

func errMsg(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func init() {
	// Not in the codecs literal: encodeOnce calls EncodeCommand, which
	// reads codecs.
	codecs[CmdOnce] = codec{name: "once", current: 1, encode: encodeOnce,
		decoders: map[uint8]func([]byte) (Command, error){1: decodeOnce}}
}
