package migrate

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxImageFile bounds one file read from a stream, so that a peer
// speaking garbage cannot fill the disk with one header.
const MaxImageFile = 64 << 30

// ErrBadStream means a stream of images was malformed.
var ErrBadStream = errors.New("bad image stream")

// Pack writes the images in dir (a flat directory, as CRIU makes it) to w
// as a tar stream. Logs are left out: they stay with the node that wrote
// them.
func Pack(dir string, w io.Writer) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if err := packFile(tw, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return tw.Close()
}

func packFile(tw *tar.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: fi.Name(), Mode: 0o600, Size: fi.Size(), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("pack %s: %w", fi.Name(), err)
	}
	return nil
}

// Unpack reads a stream written by Pack into dir (created if missing). It
// accepts only plain files with plain names: anything else is ErrBadStream.
func Unpack(r io.Reader, dir string) (files int, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, err
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("%w: %v", ErrBadStream, err)
		}
		name := hdr.Name
		if hdr.Typeflag != tar.TypeReg || name == "" || name == "." || name == ".." ||
			strings.ContainsAny(name, "/\x00") || hdr.Size < 0 || hdr.Size > MaxImageFile {
			return files, fmt.Errorf("%w: entry %q type %c size %d", ErrBadStream, name, hdr.Typeflag, hdr.Size)
		}
		if err := unpackFile(tr, filepath.Join(dir, name), hdr.Size); err != nil {
			return files, err
		}
		files++
	}
}

func unpackFile(r io.Reader, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadStream, err)
	}
	n, err := io.Copy(f, r)
	if err != nil {
		err = fmt.Errorf("%w: %s: %v", ErrBadStream, filepath.Base(path), err)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("%w: %s: %d of %d bytes", ErrBadStream, filepath.Base(path), n, size)
	}
	return err
}
