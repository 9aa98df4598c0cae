package wire

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"ssi/cluster/transport"
)

// BenchmarkImageStream: an image directory packed, sent as frames over
// the cluster's mutual TLS on loopback, and unpacked, as a migration
// does.
func BenchmarkImageStream(b *testing.B) {
	ca, err := transport.NewCA("bench")
	if err != nil {
		b.Fatal(err)
	}
	ip := []net.IP{net.IPv4(127, 0, 0, 1)}
	srvID, _ := transport.NewIdentity(ca, "a", ip)
	cliID, _ := transport.NewIdentity(ca, "b", ip)
	mux, err := transport.Listen("127.0.0.1:0", srvID, transport.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer mux.Close()
	ln := mux.Listener(transport.ProtoMigrate)
	src := b.TempDir()
	const size = 64 << 20
	if err := os.WriteFile(filepath.Join(src, "pages-1.img"), make([]byte, size), 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		done := make(chan error, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer conn.Close()
			done <- RecvImages(NewConn(conn), filepath.Join(b.TempDir(), "in"))
		}()
		conn, err := transport.Dial(context.Background(), mux.Addr().String(), transport.ProtoMigrate, cliID)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := SendImages(NewConn(conn), src); err != nil {
			b.Fatal(err)
		}
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		conn.Close()
	}
}
