package raftstore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestHomeWriteV2(t *testing.T) {
	cmd := HomeWrite{Ino: 42, Time: time.Unix(1700000000, 123).UTC(), Extents: []HomeExtent{
		{Off: 0, Data: []byte("hello")}, {Off: 1 << 40, Data: []byte{}}, {Off: 7, Data: make([]byte, 70000)},
	}}
	b, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if b[1] != homeWriteV2 {
		t.Fatalf("version %d, want %d", b[1], homeWriteV2)
	}
	if want := 2 + 20 + 3*12 + 5 + 70000; len(b) != want {
		t.Fatalf("%d bytes, want %d: no base64, no JSON", len(b), want)
	}
	got, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	want := HomeWrite{Ino: 42, Time: cmd.Time, Extents: []HomeExtent{
		{Off: 0, Data: []byte("hello")}, {Off: 1 << 40, Data: []byte{}}, {Off: 7, Data: make([]byte, 70000)},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %d extents, not the encoded ones", len(got.(HomeWrite).Extents))
	}
	// The decoder does not copy (the FSM keeps the entry's bytes), and
	// caps each extent: an append cannot run into the next one.
	ext := got.(HomeWrite).Extents
	if b[2+20+12] = 'X'; ext[0].Data[0] != 'X' {
		t.Fatal("the decoded data is a copy of the entry's")
	}
	if cap(ext[0].Data) != len(ext[0].Data) || cap(ext[1].Data) != 0 {
		t.Fatalf("extent capacities %d and %d, want their lengths", cap(ext[0].Data), cap(ext[1].Data))
	}
}

func TestHomeWriteV1StillDecodes(t *testing.T) {
	cmd := HomeWrite{Ino: 3, Time: time.Unix(5, 0).UTC(), Extents: []HomeExtent{{Off: 9, Data: []byte("old log")}}}
	body, _ := json.Marshal(cmd)
	got, err := DecodeCommand(append([]byte{byte(CmdHomeWrite), 1}, body...))
	if err != nil || !reflect.DeepEqual(got, cmd) {
		t.Fatalf("v1 entry decoded as %+v, %v", got, err)
	}
}

func TestHomeWriteV2Rejects(t *testing.T) {
	good, _ := encodeHomeWriteV2(HomeWrite{Ino: 1, Extents: []HomeExtent{{Off: 0, Data: []byte("abc")}}})
	huge := append([]byte(nil), good[:20]...)
	binary.BigEndian.PutUint32(huge[16:], maxHomeExtents+1)
	lying := append([]byte(nil), good...)
	binary.BigEndian.PutUint32(lying[20+8:], 1<<31)
	cases := map[string][]byte{
		"empty":          {},
		"short header":   good[:19],
		"cut extent":     good[:len(good)-1],
		"trailing":       append(append([]byte(nil), good...), 0),
		"extent count":   huge,
		"length too big": lying,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeCommand(append([]byte{byte(CmdHomeWrite), homeWriteV2}, body...))
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("got %v, want ErrBadCommand", err)
			}
		})
	}
}
