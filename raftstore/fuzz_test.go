package raftstore

import (
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzApply: a log entry of any bytes is either refused by the decoder
// or applied without a panic, and a decoded command encodes to an entry
// that decodes to the same type. The log is written by members, who are
// trusted only so far: a bad entry must never take a replica down.
func FuzzApply(f *testing.F) {
	for _, c := range allCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{byte(CmdHomeWrite), 2, 0, 0})
	f.Add([]byte{byte(CmdProcAdd), 1, '{', '}'})
	f.Fuzz(func(t *testing.T, in []byte) {
		cmd, err := DecodeCommand(in)
		if err != nil {
			return
		}
		again, err := EncodeCommand(cmd)
		if err != nil {
			t.Fatalf("decoded %T does not encode: %v", cmd, err)
		}
		if back, err := DecodeCommand(again); err != nil || back.Type() != cmd.Type() {
			t.Fatalf("%T round trip: %T, %v", cmd, back, err)
		}
		f := newFSM()
		for i, c := range append(twoNodes(), cmd) {
			b, _ := EncodeCommand(c)
			f.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: b})
		}
	})
}
