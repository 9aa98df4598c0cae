package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// MaxFrame bounds a join frame; the largest, the reply, carries two
// certificates, a key and the caller's blob, well under it.
const MaxFrame = 64 << 10

// joinVersion is the version of the join exchange in the hello.
const joinVersion = 1

// Join messages, in order: hello (newcomer), challenge (server proves),
// request (newcomer proves and asks), reply (certificate or refusal).
// []byte fields travel as base64 in JSON.
type (
	joinHello struct {
		V  int    `json:"v"`
		ID string `json:"id"` // joinID of the token's hash
	}
	joinChallenge struct {
		Proof []byte `json:"proof,omitempty"`
		Code  string `json:"code,omitempty"`
	}
	joinRequest struct {
		Proof     []byte   `json:"proof"`
		Name      string   `json:"name"`
		IPs       []string `json:"ips"`
		PublicKey []byte   `json:"public_key"` // PKIX DER
	}
	joinReply struct {
		Code   string `json:"code,omitempty"`
		Error  string `json:"error,omitempty"`
		Cert   []byte `json:"cert,omitempty"`    // DER
		CACert []byte `json:"ca_cert,omitempty"` // DER
		CAKey  []byte `json:"ca_key,omitempty"`  // PKCS#8 DER
		Blob   []byte `json:"blob,omitempty"`
	}
)

// Refusal codes in challenges and replies.
const (
	codeBadToken = "bad_token"
	codeRefused  = "refused"
	codeInvalid  = "invalid"
	codeInternal = "internal"
)

// Proof labels: distinct per side, so that a proof cannot be reflected.
const (
	labelServer = "ssi-join server"
	labelClient = "ssi-join client"
	ekmLabel    = "ssi-join"
)

// proof is HMAC-SHA256 keyed by the token hash over a side's label and
// the session's exported keying material.
func proof(key []byte, label string, ekm []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(ekm)
	return h.Sum(nil)
}

// writeFrame sends v as JSON after a 4-byte big-endian length.
func writeFrame(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(data), MaxFrame)
	}
	buf := make([]byte, 4, 4+len(data))
	binary.BigEndian.PutUint32(buf, uint32(len(data)))
	_, err = w.Write(append(buf, data...))
	return err
}

// readFrame reads one frame into v, refusing frames over MaxFrame before
// allocating them.
func readFrame(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return fmt.Errorf("%w: frame length %d", ErrJoinProtocol, n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %w", ErrJoinProtocol, err)
	}
	return nil
}
