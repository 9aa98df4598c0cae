package migrate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
)

// Memory pages can travel while CRIU dumps instead of after: the dump
// writes them to a connected socket (DumpOptions.PageServer) and a CRIU
// page server on the destination, given the other end of the stream,
// stores them in the destination's images directory. Whatever carries
// the bytes between the two sockets is the caller's business (ssi relays
// them over its mutual-TLS migration stream).

// StartPageServer starts a CRIU page server that reads pages from sock
// (a connected stream socket) into dir, in the background. It stops by
// itself when the dump side ends the session; the caller learns that
// from the socket (its end reads EOF).
func (c *Client) StartPageServer(ctx context.Context, dir string, sock *os.File) (pid int, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrDump, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrDump, err)
	}
	defer d.Close()
	opts := &rpc.CriuOpts{
		ImagesDirFd: ptr(int32(d.Fd())),
		LogLevel:    ptr(int32(4)),
		LogFile:     ptr("page-server.log"),
		// fd 3 is the RPC socket; the page stream follows it.
		Ps: &rpc.CriuPageServerInfo{Fd: ptr(int32(4))},
	}
	s, err := c.startSwrk([]*os.File{sock}, nil)
	if err != nil {
		return 0, err
	}
	defer s.done(&err)
	resp, err := s.call(ctx, &rpc.CriuReq{Type: ptr(rpc.CriuReqType_PAGE_SERVER), Opts: opts})
	if err != nil || !resp.GetSuccess() {
		return 0, failure(ErrDump, resp, err, filepath.Join(dir, "page-server.log"))
	}
	return int(resp.GetPs().GetPid()), nil
}
