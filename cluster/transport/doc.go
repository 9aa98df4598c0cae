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
// certificate issued by that CA, usable as both TLS server and client.
// Only voters hold the CA key (Identity.Signer): they issue certificates,
// to newcomers and as renewals; a member without it sends a newcomer to
// the leader, which the newcomer follows once. Certificates are
// short-lived (cluster.cert_lifetime) and renew at two thirds of their
// life (Identity.Renew), picked up by the next handshake on both sides
// while open connections go on. Every handshake refuses a peer whose CN
// is not a node name and one that Identity.SetRefuse rejects: the agent
// refuses the serials the agreed state has revoked (ErrRevoked), and a
// removed node's certificates are revoked with it; the connections such
// a certificate opened before are closed (Mux.Drop), so a revocation
// takes effect at once, not at the next handshake.
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
// its private key never leaves it. The server then checks the token's
// status (an expired, revoked or used-up token is refused with its
// reason, only to a party that proved it holds the token), spends one
// use through the leader, records the certificate's serial in the agreed
// state and returns the certificate, the CA certificate (never the key)
// and an opaque blob from the caller.
//
// The HMAC key is TokenHash(token), so a member needs only the hash to
// admit newcomers: the replicated state stores hashes, never tokens.
// Whoever holds a hash can join as a NEW node, which gives a member
// nothing it lacks: it cannot take an existing node's name (Admit
// refuses it) nor sign anything. TokenTag is a different,
// one-way tag of the token that is safe to broadcast in discovery
// beacons.
//
// A peer without a valid certificate or token, or a client sending
// anything that is not TLS, is disconnected and logged, one line per
// connection, rate limited. Handshakes run under a short deadline, in
// bounded pools: strangers are limited per source address and in all,
// and known members' addresses have a pool of their own, so that
// strangers cannot starve members.
//
// # Files
//
// An identity lives in one directory (the agent uses <data_dir>/tls):
// ca.crt, node.crt, node.key and, on voters only, ca.key, PEM encoded;
// keys are mode 0600 and the directory 0700.
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
