// Package fs renders the cluster as the /cluster file system (go-fuse):
// proc, nodes, admin and the shared home. It translates a view model into
// FUSE nodes and requests back into calls on the agent; it decides nothing.
package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// probeText is what the probe's one file holds.
const probeText = "ssi fuse probe\n"

// Probe proves that this machine can serve a FUSE file system: it mounts a
// one-file file system on a temporary directory, reads the file back
// through the kernel, and unmounts. It returns what failed.
func Probe(ctx context.Context) error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("/dev/fuse: %w (load the fuse module: modprobe fuse)", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found (install fuse3: make setup)")
	}
	dir, err := os.MkdirTemp("", "ssi-fuse-probe-")
	if err != nil {
		return err
	}
	defer os.Remove(dir)
	root := &gofs.Inode{}
	srv, err := gofs.Mount(dir, root, &gofs.Options{
		MountOptions: fuse.MountOptions{FsName: "ssi-probe", Name: "ssi", DirectMount: true},
		OnAdd: func(ctx context.Context) {
			f := &gofs.MemRegularFile{Data: []byte(probeText), Attr: fuse.Attr{Mode: 0o444}}
			root.AddChild("probe", root.NewPersistentInode(ctx, f, gofs.StableAttr{Mode: syscall.S_IFREG}), false)
		},
	})
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer func() {
		_ = srv.Unmount()
		srv.Wait()
	}()
	if err := srv.WaitMount(); err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		b, err := os.ReadFile(filepath.Join(dir, "probe"))
		if err == nil && string(b) != probeText {
			err = fmt.Errorf("read %q through the mount, want %q", b, probeText)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("read through the mount hangs")
	case <-ctx.Done():
		return ctx.Err()
	}
}
