package raftstore

import (
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer adapts a Layer to raft.StreamLayer. It also reports the
// advertised address as its own, because raft's transport takes its local
// address from the listener, which may be bound to a wildcard.
type streamLayer struct {
	Layer
	addr advertisedAddr
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return l.Layer.Dial(string(address), timeout)
}

func (l *streamLayer) Addr() net.Addr { return l.addr }

// advertisedAddr is Config.Addr as a net.Addr.
type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }
