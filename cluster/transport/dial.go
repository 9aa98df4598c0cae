package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"
)

// Dial connects to the node at addr (host:port) for proto, presenting
// id's live certificate (Identity.Leaf) and accepting only a server
// whose certificate chains to id's cluster CA and names a node
// (ErrUntrusted otherwise) and that id's refuse check lets through
// (ErrRevoked, Identity.SetRefuse). ctx bounds the connection
// and the handshake, not the use of the returned connection, which is a
// *tls.Conn. A server that refuses us closes the connection: the first
// Read then fails.
func Dial(ctx context.Context, addr string, proto byte, id *Identity) (net.Conn, error) {
	if proto == ProtoJoin || !knownProto(proto) {
		return nil, fmt.Errorf("dial %s: protocol %#02x cannot be dialed", addr, proto)
	}
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	tc, err := clientHandshake(ctx, raw, clientConfig(id), proto)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", protoName(proto), addr, err)
	}
	return tc, nil
}

// DialTimeout is Dial bounded by timeout instead of a context.
func DialTimeout(addr string, proto byte, id *Identity, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return Dial(ctx, addr, proto, id)
}

// clientHandshake runs the TLS handshake on raw and sends the protocol
// byte, within ctx; on error raw is closed.
func clientHandshake(ctx context.Context, raw net.Conn, cfg *tls.Config, proto byte) (*tls.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if _, err := tc.Write([]byte{proto}); err != nil {
		raw.Close()
		return nil, err
	}
	_ = raw.SetDeadline(time.Time{})
	return tc, nil
}
