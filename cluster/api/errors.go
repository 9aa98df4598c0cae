package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"ssi/fs"
	"ssi/raftstore"
)

// Error is the body of every failed API call, on the local socket and
// between agents alike: one encoder (WriteError) and one decoder
// (ReadError) for both.
type Error struct {
	Error string `json:"error"`
	// Code names the raftstore error kind, so that errors.Is holds on the
	// far side of a forwarded command.
	Code string `json:"code,omitempty"`
	// Errno names the errno a /cluster write would get ("EBUSY", ...).
	Errno string `json:"errno,omitempty"`
}

// ErrNotMember answers everything that needs the cluster before this
// node has joined one.
var ErrNotMember = errors.New("this node has not joined a cluster yet")

// ErrRetry marks a failure worth trying again, elsewhere or later: the
// peer could not be reached, or it was not the leader.
var ErrRetry = errors.New("retry")

// WriteJSON answers v with status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers err with status code, naming its raftstore kind.
func WriteError(w http.ResponseWriter, code int, err error) {
	WriteJSON(w, code, Error{Error: err.Error(), Code: raftstore.ErrorCode(err)})
}

// WriteErrno answers a request whose errors are the contract's errnos
// (migrate, kill, wait): 409 with the errno err stands for.
func WriteErrno(w http.ResponseWriter, err error) {
	WriteJSON(w, http.StatusConflict, Error{Error: err.Error(), Errno: fs.ErrnoName(err)})
}

// ReadError turns a failed answer's body back into the error it was:
// its errno's domain error, or its raftstore kind, or its text.
func ReadError(resp *http.Response) error {
	e := DecodeError(resp)
	if e.Error == "" {
		return fmt.Errorf("agent: %s", resp.Status)
	}
	return e.Err()
}

// DecodeError reads a failed answer's body as it came, for callers that
// act on the text before it becomes an error (a peer's answer worth
// retrying); a body that is not an Error gives the zero Error.
func DecodeError(resp *http.Response) Error {
	var e Error
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) != nil {
		return Error{}
	}
	return e
}

// Err is the error e stands for: its errno's domain error, or its
// raftstore kind, or its text.
func (e Error) Err() error {
	if e.Errno != "" {
		return FromErrno(e.Errno, e.Error)
	}
	if rerr := raftstore.ErrorFromCode(e.Code, e.Error); rerr != nil {
		return rerr
	}
	return errors.New(e.Error)
}

// FromErrno rebuilds a domain error from its errno name.
func FromErrno(name, msg string) error {
	if e := fs.ErrorForErrno(name); e != nil {
		return &remoteErrno{msg: msg, sentinel: e}
	}
	return errors.New(msg)
}

// remoteErrno is an error from another agent: its message as it was,
// and the domain error it stands for.
type remoteErrno struct {
	msg      string
	sentinel error
}

func (e *remoteErrno) Error() string { return e.msg }
func (e *remoteErrno) Unwrap() error { return e.sentinel }

// domainErrors is the one table from the cluster's own errors to the
// domain errors of fs (which say the errno a writer sees). Home is the
// error in /cluster/home where it differs from the one for processes
// and admin files.
var domainErrors = []struct {
	cause      error
	proc, home error
}{
	{raftstore.ErrNotFound, fs.ErrNoProcess, fs.ErrNotFound},
	{raftstore.ErrExists, nil, fs.ErrExists},
	{raftstore.ErrNotEmpty, nil, fs.ErrNotEmpty},
	{raftstore.ErrIsDir, nil, fs.ErrIsDir},
	{raftstore.ErrNotDir, nil, fs.ErrNotDir},
	{raftstore.ErrFileTooBig, nil, fs.ErrTooBig},
	{raftstore.ErrNoSpace, nil, fs.ErrNoSpace},
	{raftstore.ErrInvalid, fs.ErrBadValue, nil},
	{raftstore.ErrBusy, fs.ErrBusy, nil},
	{raftstore.ErrNoLeader, fs.ErrNoQuorum, nil},
	{raftstore.ErrNotLeader, fs.ErrNoQuorum, nil},
	{raftstore.ErrTimeout, fs.ErrNoQuorum, nil},
	{raftstore.ErrClosed, fs.ErrNoQuorum, nil},
	{ErrNotMember, fs.ErrNoQuorum, nil},
	{ErrRetry, fs.ErrNoQuorum, nil},
	{context.DeadlineExceeded, fs.ErrNoQuorum, nil},
}

// Domain maps an error of the cluster to the domain error a process or
// admin file answers; others pass unchanged.
func Domain(err error) error { return domain(err, false) }

// HomeDomain is Domain for /cluster/home.
func HomeDomain(err error) error { return domain(err, true) }

func domain(err error, home bool) error {
	if err == nil {
		return nil
	}
	for _, d := range domainErrors {
		if !errors.Is(err, d.cause) {
			continue
		}
		to := d.proc
		if home && d.home != nil {
			to = d.home
		}
		if to != nil {
			return fmt.Errorf("%w: %v", to, err)
		}
	}
	return err
}
