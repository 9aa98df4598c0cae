// Package transport is the authenticated node-to-node transport of ssi:
// every connection between agents (Raft, RPC, migration streams and the
// join of a new machine) goes over ONE TCP port, always inside TLS 1.3.
//
// # Protocol
//
// A connection is a TLS 1.3 session followed by one protocol byte sent by
// the dialer (ProtoRaft, ProtoRPC, ProtoMigrate, ProtoJoin); after that
// byte the stream belongs to the protocol. The Mux accepts on the port,
// runs each handshake in its own goroutine under a deadline, reads the
// protocol byte and hands the connection to the listener of that
// protocol (Mux.Listener, Mux.StreamLayer). The protocol constants are
// append-only: a byte once given a meaning keeps it forever, so agents
// of different versions never misread each other.
//
// # Trust model
//
// The first node creates a cluster CA (NewCA). Every member holds a node
// certificate issued by that CA, usable as both TLS server and client,
// and also holds the CA key, so that any member can admit a newcomer.
// Raft, RPC and migration connections are mutually authenticated: the
// server requires a client chain to the cluster CA and the dialer checks
// the server's chain against the same CA. Nodes are addressed by IP, so
// the dialer verifies the chain only, not a host name: membership of the
// cluster is what is trusted, PeerName tells who the peer is.
//
// A machine that is not yet a member holds only a join token (NewToken,
// printed by `ssi token create`). It connects with ProtoJoin, without a
// client certificate and without knowing the CA, so it cannot trust the
// TLS server certificate. Instead both sides prove knowledge of the token
// bound to that very TLS session: each sends an HMAC keyed by the token
// over a label and the session's exported keying material (RFC 8446
// §7.5), server first. A man in the middle terminates two different
// sessions and so cannot relay a proof; a party without the token learns
// nothing but that the proof failed. Only after the server's proof
// checks out does the newcomer send its name, addresses and public key;
// its private key never leaves it. The server returns a certificate, the
// CA certificate and key, and an opaque blob from the caller.
//
// The HMAC key is TokenHash(token), so a member needs only the hash to
// admit newcomers: the replicated state stores hashes, never tokens.
// Whoever holds a hash can join, which gives nothing to a member that
// it does not already have with the CA key. TokenTag is a different,
// one-way tag of the token that is safe to broadcast in discovery
// beacons.
//
// A peer without a valid certificate or token, or a client sending
// anything that is not TLS, is disconnected and logged, one line per
// connection, rate limited. A bounded number of handshakes run at once,
// each under a deadline, so slow or garbage clients cannot exhaust the
// agent nor delay legitimate peers for longer than that deadline.
//
// # Files
//
// An identity lives in one directory (the agent uses <data_dir>/tls):
// ca.crt, ca.key, node.crt and node.key, PEM encoded; keys are mode 0600
// and the directory 0700.
package transport

import "errors"

// Protocol bytes, sent by the dialer right after the TLS handshake. The
// list is append-only: never reuse or renumber a byte.
const (
	// ProtoRaft carries hashicorp/raft's stream transport.
	ProtoRaft byte = 'R'
	// ProtoRPC carries agent-to-agent requests.
	ProtoRPC byte = 'P'
	// ProtoMigrate carries process migration image streams.
	ProtoMigrate byte = 'M'
	// ProtoJoin is the join handshake of a newcomer holding a token; it is
	// the only protocol open to clients without a cluster certificate.
	ProtoJoin byte = 'J'
)

// Sentinel errors, wrapped with %w by the functions that return them.
var (
	// ErrBadToken means a join token was refused: the server did not
	// accept our proof, or the server failed to prove it knows the token.
	ErrBadToken = errors.New("join token refused")
	// ErrTokenFormat means a string is not a join token at all.
	ErrTokenFormat = errors.New("malformed join token")
	// ErrJoinRefused means the server knew the token but its admission
	// hook refused the newcomer (for example a duplicate node name).
	ErrJoinRefused = errors.New("join refused")
	// ErrJoinProtocol means a join peer sent something malformed.
	ErrJoinProtocol = errors.New("join protocol error")
	// ErrUntrusted means a peer's certificate does not chain to the
	// cluster CA.
	ErrUntrusted = errors.New("peer not trusted by the cluster ca")
	// ErrNoIdentity means a directory holds no complete identity.
	ErrNoIdentity = errors.New("no node identity")
	// ErrBadIdentity means identity material is malformed or inconsistent
	// (a key that does not match its certificate, a certificate that does
	// not chain to the CA).
	ErrBadIdentity = errors.New("bad node identity")
	// ErrNodeName means a node name cannot be put in a certificate.
	ErrNodeName = errors.New("invalid node name")
)

func knownProto(p byte) bool {
	switch p {
	case ProtoRaft, ProtoRPC, ProtoMigrate, ProtoJoin:
		return true
	}
	return false
}

// protoName names a protocol byte for logs.
func protoName(p byte) string {
	switch p {
	case ProtoRaft:
		return "raft"
	case ProtoRPC:
		return "rpc"
	case ProtoMigrate:
		return "migrate"
	case ProtoJoin:
		return "join"
	}
	return "unknown"
}
