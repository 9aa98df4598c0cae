package transport

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
)

// FuzzJoinMessages: whatever a stranger sends on the join port, each
// message decodes or is refused with ErrJoinProtocol-wrapped errors or
// I/O errors, never a panic, and a request that parses names a valid
// node, at most maxJoinIPs addresses and a P-256 key.
func FuzzJoinMessages(f *testing.F) {
	add := func(v any) {
		b, _ := json.Marshal(v)
		f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
	}
	add(joinHello{V: joinVersion, ID: "abc"})
	add(joinRequest{Name: "node2", IPs: []string{"10.0.0.2"}, PublicKey: []byte{1, 2}})
	add(map[string]any{"name": "../x", "ips": make([]string, 40)})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		var hello joinHello
		_ = readFrame(bytes.NewReader(in), &hello)
		var ch joinChallenge
		_ = readFrame(bytes.NewReader(in), &ch)
		var reply joinReply
		_ = readFrame(bytes.NewReader(in), &reply)
		var req joinRequest
		if readFrame(bytes.NewReader(in), &req) != nil {
			return
		}
		ips, pub, err := parseJoinRequest(&req)
		if err != nil {
			return
		}
		if ValidNodeName(req.Name) != nil || len(ips) > maxJoinIPs || pub == nil {
			t.Fatalf("accepted %+v", req)
		}
	})
}
