package api

import (
	"context"
	"errors"
	"net"
	"net/http"

	"golang.org/x/sys/unix"
)

type connKey struct{}

// ConnContext is an http.Server's ConnContext: it keeps each request's
// connection, so that handlers can ask who is at its other end.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// ConnOf is the connection of a request, set by ConnContext.
func ConnOf(r *http.Request) net.Conn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return c
}

// PeerCred is the uid and gid of the process at the other end of a unix
// socket.
func PeerCred(c net.Conn) (uid, gid uint32, ok bool) {
	uc, isUnix := c.(*net.UnixConn)
	if !isUnix {
		return 0, 0, false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, 0, false
	}
	return cred.Uid, cred.Gid, true
}

// RootOnly lets only root (by the socket peer's credentials) through: a
// join token admits a machine to the cluster, an admin switch moves
// everyone's processes.
func RootOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		uid, _, ok := PeerCred(ConnOf(r))
		if !ok || uid != 0 {
			WriteError(w, http.StatusForbidden, errors.New("only root may do this (EPERM)"))
			return
		}
		h(w, r)
	}
}
