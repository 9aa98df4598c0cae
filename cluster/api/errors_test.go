package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/sys/unix"

	"ssi/fs"
	"ssi/raftstore"
)

// Errors from another agent keep their text and their errno.
func TestRemoteErrnoKeepsKind(t *testing.T) {
	err := FromErrno(fs.ErrnoName(fs.ErrBusy), "process 7 is migrating")
	if !errors.Is(err, fs.ErrBusy) || err.Error() != "process 7 is migrating" {
		t.Fatalf("got %v", err)
	}
	if fs.ErrnoName(errors.New("x")) != "EIO" || FromErrno("EWHAT", "m").Error() != "m" {
		t.Fatal("unknown errors")
	}
}

// What one agent writes, the other reads back as the same kind of error.
func TestErrorRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		write func(w http.ResponseWriter)
		want  error
		text  string
	}{
		{func(w http.ResponseWriter) { WriteErrno(w, fmt.Errorf("%w: process 3", fs.ErrNoProcess)) }, fs.ErrNoProcess, "no such cluster process: process 3"},
		{func(w http.ResponseWriter) { WriteError(w, http.StatusConflict, raftstore.ErrNotFound) }, raftstore.ErrNotFound, ""},
		{func(w http.ResponseWriter) { WriteError(w, http.StatusBadRequest, errors.New("want a command")) }, nil, "want a command"},
	} {
		rec := httptest.NewRecorder()
		tc.write(rec)
		err := ReadError(rec.Result())
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || (tc.text != "" && err.Error() != tc.text) {
			t.Errorf("read back %v, want %v %q", err, tc.want, tc.text)
		}
	}
}

// The one table: a missing thing is a missing process outside the home
// and a missing file in it; quorum trouble is EROFS in both.
func TestDomainTable(t *testing.T) {
	for _, tc := range []struct {
		err        error
		proc, home string
	}{
		{raftstore.ErrNotFound, "ENOENT", "ENOENT"},
		{raftstore.ErrInvalid, "EINVAL", "EINVAL"},
		{raftstore.ErrBusy, "EBUSY", "EBUSY"},
		{raftstore.ErrNotLeader, "EROFS", "EROFS"},
		{ErrNotMember, "EROFS", "EROFS"},
		{ErrRetry, "EROFS", "EROFS"},
		{raftstore.ErrExists, "EIO", "EEXIST"},
		{errors.New("other"), "EIO", "EIO"},
	} {
		if got := unix.ErrnoName(fs.ErrnoOf(Domain(tc.err))); got != tc.proc {
			t.Errorf("Domain(%v) = %s, want %s", tc.err, got, tc.proc)
		}
		if got := unix.ErrnoName(fs.ErrnoOf(HomeDomain(tc.err))); got != tc.home {
			t.Errorf("HomeDomain(%v) = %s, want %s", tc.err, got, tc.home)
		}
	}
	if !errors.Is(HomeDomain(raftstore.ErrNotFound), fs.ErrNotFound) || !errors.Is(Domain(raftstore.ErrNotFound), fs.ErrNoProcess) {
		t.Fatal("ENOENT of the wrong kind")
	}
}
