package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// CommandType numbers a kind of command in the raft log: the first byte
// of every entry.
//
// The numbers are append-only. A committed entry is kept in the log and
// replayed by every node (and by nodes that join years later), so a number
// must keep its meaning forever: add new kinds at the end, never renumber,
// and never reuse the number of a retired kind (leave a gap and a comment).
type CommandType uint8

// Command types. Append only; see CommandType.
const (
	CmdNodeUpsert     CommandType = 1
	CmdNodeRemove     CommandType = 2
	CmdNodeSetState   CommandType = 3
	CmdAdminSet       CommandType = 4
	CmdProcAdd        CommandType = 5
	CmdProcUpdate     CommandType = 6
	CmdProcRemove     CommandType = 7
	CmdMigrationStart CommandType = 8
	CmdMigrationPhase CommandType = 9
	CmdMigrationEnd   CommandType = 10
	CmdTokenAdd       CommandType = 11
	CmdTokenRemove    CommandType = 12
	CmdHomeConfig     CommandType = 13
	CmdHomeCreate     CommandType = 14
	CmdHomeWrite      CommandType = 15
	CmdHomeTruncate   CommandType = 16
	CmdHomeSetAttr    CommandType = 17
	CmdHomeLink       CommandType = 18
	CmdHomeUnlink     CommandType = 19
	CmdHomeRmdir      CommandType = 20
	CmdHomeRename     CommandType = 21
	CmdTokenUse       CommandType = 22
	CmdTokenRevoke    CommandType = 23
	CmdCertIssue      CommandType = 24
	CmdCertRevoke     CommandType = 25
	CmdOnce           CommandType = 26
)

// Command is one change to the agreed state. The set is closed: only the
// command types of this package implement it.
type Command interface {
	// Type is the command's number in the log.
	Type() CommandType
	isCommand()
}

// codec knows one command type: the version Encode writes and a decoder
// for every version ever written.
//
// To change a command's body: keep the old struct under a private name
// with its decoder (converting to the new struct), add the new decoder
// under version+1, and raise current only once every node runs a binary
// that decodes the new version; a node that meets a version it does not
// know in a committed entry stops (see fsm.Apply).
type codec struct {
	name     string
	current  uint8
	decoders map[uint8]func(body []byte) (Command, error)
	// encode writes the current version; nil means JSON.
	encode func(Command) ([]byte, error)
}

var codecs = map[CommandType]codec{
	CmdNodeUpsert:     v1[NodeUpsert]("node upsert"),
	CmdNodeRemove:     v1[NodeRemove]("node remove"),
	CmdNodeSetState:   v1[NodeSetState]("node set state"),
	CmdAdminSet:       v1[AdminSet]("admin set"),
	CmdProcAdd:        v1[ProcAdd]("proc add"),
	CmdProcUpdate:     v1[ProcUpdate]("proc update"),
	CmdProcRemove:     v1[ProcRemove]("proc remove"),
	CmdMigrationStart: v1[MigrationStart]("migration start"),
	CmdMigrationPhase: v1[MigrationPhase]("migration phase"),
	CmdMigrationEnd:   v1[MigrationEnd]("migration end"),
	CmdTokenAdd:       v1[TokenAdd]("token add"),
	CmdTokenRemove:    v1[TokenRemove]("token remove"),
	CmdHomeConfig:     v1[HomeConfig]("home config"),
	CmdHomeCreate:     v1[HomeCreate]("home create"),
	CmdHomeWrite: {name: "home write", current: homeWriteV2, encode: encodeHomeWriteV2,
		decoders: map[uint8]func([]byte) (Command, error){1: decodeJSON[HomeWrite], homeWriteV2: decodeHomeWriteV2}},
	CmdHomeTruncate: v1[HomeTruncate]("home truncate"),
	CmdHomeSetAttr:  v1[HomeSetAttr]("home setattr"),
	CmdHomeLink:     v1[HomeLink]("home link"),
	CmdHomeUnlink:   v1[HomeUnlink]("home unlink"),
	CmdHomeRmdir:    v1[HomeRmdir]("home rmdir"),
	CmdHomeRename:   v1[HomeRename]("home rename"),
	CmdTokenUse:     v1[TokenUse]("token use"),
	CmdTokenRevoke:  v1[TokenRevoke]("token revoke"),
	CmdCertIssue:    v1[CertIssue]("cert issue"),
	CmdCertRevoke:   v1[CertRevoke]("cert revoke"),
}

// v1 is the codec of a command that has only ever had version 1.
func v1[T Command](name string) codec {
	return codec{name: name, current: 1, decoders: map[uint8]func([]byte) (Command, error){
		1: decodeJSON[T],
	}}
}

// String names the command type, for logs and errors.
func (t CommandType) String() string {
	if c, ok := codecs[t]; ok {
		return c.name
	}
	return fmt.Sprintf("command type %d", uint8(t))
}

// EncodeCommand returns cmd as a raft log entry: its type byte, the
// current version byte, then its body (JSON unless the codec says
// otherwise). A follower forwards these
// bytes to the leader, which applies them with ApplyEncoded.
func EncodeCommand(cmd Command) ([]byte, error) {
	if cmd == nil {
		return nil, fmt.Errorf("encode nil command: %w", ErrBadCommand)
	}
	c, ok := codecs[cmd.Type()]
	if !ok {
		return nil, fmt.Errorf("encode %v: %w", cmd.Type(), ErrBadCommand)
	}
	var body []byte
	var err error
	if c.encode != nil {
		body, err = c.encode(cmd)
	} else {
		body, err = json.Marshal(cmd)
	}
	if err != nil {
		return nil, fmt.Errorf("encode %v: %v: %w", cmd.Type(), err, ErrBadCommand)
	}
	return append([]byte{byte(cmd.Type()), c.current}, body...), nil
}

// DecodeCommand parses an entry made by EncodeCommand, of any version this
// binary knows. Errors wrap ErrBadCommand.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("decode: %d bytes, want at least 2: %w", len(b), ErrBadCommand)
	}
	t, ver := CommandType(b[0]), b[1]
	c, ok := codecs[t]
	if !ok {
		return nil, fmt.Errorf("decode: unknown command type %d: %w", b[0], ErrBadCommand)
	}
	dec, ok := c.decoders[ver]
	if !ok {
		return nil, fmt.Errorf("decode %v: unknown version %d: %w", t, ver, ErrBadCommand)
	}
	cmd, err := dec(b[2:])
	if err != nil {
		return nil, fmt.Errorf("decode %v v%d: %v: %w", t, ver, err, ErrBadCommand)
	}
	return cmd, nil
}

// decodeJSON decodes exactly one JSON value into a T. It is strict
// (unknown fields, trailing data) so that bytes meant for another type or
// version are refused rather than half understood.
func decodeJSON[T Command](body []byte) (Command, error) {
	var v T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after body")
	}
	return v, nil
}
