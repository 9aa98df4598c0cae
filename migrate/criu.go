package migrate

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// MinVersion is the oldest CRIU ssi accepts: 4.2 (encoded as CRIU does,
// major*10000 + minor*100 + sublevel). Releases before 4.1 fail on current
// kernels ("Unexpected rt vDSO area bounds"), and 4.1 cannot checkpoint a
// process holding a TCP or UDP socket on Linux >= 6.16, which refuses
// getsockopt(SO_PASSCRED) on inet sockets ("Can't get 1:16 opt"; CRIU issue
// #2705, fixed in 4.2).
const MinVersion = 40200

// Sentinel errors. They are wrapped with context; test with errors.Is.
var (
	// ErrNoCRIU means the CRIU binary could not be started.
	ErrNoCRIU = errors.New("criu not found")
	// ErrCRIUTooOld means CRIU is older than MinVersion.
	ErrCRIUTooOld = errors.New("criu too old")
	// ErrDump means CRIU refused or failed to checkpoint.
	ErrDump = errors.New("checkpoint failed")
	// ErrRestore means CRIU refused or failed to restore.
	ErrRestore = errors.New("restore failed")
)

// Config says where CRIU is and how it must be run on this machine.
type Config struct {
	// Path of the criu binary or wrapper.
	Path string
	// NoBreakpoints runs criu with CRIU_FAULT=130 (stop tasks at syscall
	// boundaries instead of with hardware breakpoints, which do not fire
	// in some VMs and make `criu dump` hang).
	NoBreakpoints bool
}

// Client runs CRIU operations. It is safe for concurrent use: each call
// starts its own `criu swrk`.
type Client struct {
	cfg Config
	log *slog.Logger
}

// New returns a Client. A nil logger discards.
func New(cfg Config, log *slog.Logger) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, log: log}
}

// ptr returns a pointer to v, for CRIU's optional protobuf fields.
func ptr[T any](v T) *T { return &v }

// env is criu's environment: ours, plus CRIU_FAULT where configured.
func (c *Client) env() []string {
	env := os.Environ()
	if c.cfg.NoBreakpoints {
		env = append(env, "CRIU_FAULT=130")
	}
	return env
}

// swrk is one `criu swrk` process and our end of its RPC socket.
type swrk struct {
	cmd  *exec.Cmd
	sock *os.File
	// notify answers CRIU's notifications (asked for with
	// notify_scripts): the options it returns go back with the answer
	// (CRIU reads external objects from them at "query-ext-files"); an
	// error fails the notification, and CRIU gives up. nil answers
	// every one with success.
	notify    func(*rpc.CriuNotify) (*rpc.CriuOpts, error)
	notifyErr error // what notify last failed with
}

// user is who criu runs as when not root.
type user struct{ uid, gid uint32 }

// asUser is uid/gid, or nil (root, in the caller's namespaces) for uid 0.
func asUser(uid, gid uint32) *user {
	if uid == 0 {
		return nil
	}
	return &user{uid, gid}
}

// dumpCaps are what an unprivileged dump needs (CRIU's --unprivileged):
// checkpoint_restore and sys_ptrace to inspect the tree, sys_admin and
// sys_chroot to enter its mount namespace and read its mounts, and
// dac_read_search to find what an inotify watch names: the kernel gives
// CRIU the watched inode as a file handle, and open_by_handle_at needs it
// (without it: "fsnotify: Can't dump that handle").
var dumpCaps = []uintptr{unix.CAP_CHECKPOINT_RESTORE, unix.CAP_SYS_PTRACE, unix.CAP_SYS_ADMIN, unix.CAP_SYS_CHROOT,
	unix.CAP_DAC_READ_SEARCH}

// startSwrk starts criu in service-worker mode, as root or as u. extra
// files become fds 4, 5, ... in criu (fd 3 is the RPC socket).
func (c *Client) startSwrk(extra []*os.File, u *user) (*swrk, error) {
	fds, err := syscall.Socketpair(syscall.AF_LOCAL, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("criu socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "criu-rpc")
	theirs := os.NewFile(uintptr(fds[1]), "criu-rpc-peer")
	defer theirs.Close()

	cmd := exec.Command(c.cfg.Path, "swrk", "3")
	cmd.ExtraFiles = append([]*os.File{theirs}, extra...)
	cmd.Env = c.env()
	// Never inside a FUSE mount this process may serve (go-fuse fs/api.go,
	// "Deadlocks").
	cmd.Dir = "/"
	cmd.Stdout = nil
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if u != nil && u.uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.uid, Gid: u.gid}
		cmd.SysProcAttr.AmbientCaps = dumpCaps
	}
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, fmt.Errorf("%w: start %s: %v", ErrNoCRIU, c.cfg.Path, err)
	}
	return &swrk{cmd: cmd, sock: ours}, nil
}

// close ends the session and reaps criu.
func (s *swrk) close() error {
	s.sock.Close()
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("criu swrk: %w", err)
	}
	return nil
}

// done is close for a deferred call: criu's exit status becomes *err only
// if nothing else failed, as it is usually a consequence, and a failure
// stays one line (cantmove shows it).
func (s *swrk) done(err *error) {
	if cerr := s.close(); *err == nil {
		*err = cerr
	}
}

// call sends one request and returns CRIU's final answer, answering
// notifications (sent only if opts ask for them) with success.
func (s *swrk) call(ctx context.Context, req *rpc.CriuReq) (*rpc.CriuResp, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = s.sock.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = s.cmd.Process.Kill()
		// The tasks CRIU was restoring hold its end of the socket too, and
		// one stuck in the kernel (a file system that does not answer)
		// outlives criu: only a shutdown ends our read.
		_ = syscall.Shutdown(int(s.sock.Fd()), syscall.SHUT_RDWR)
	})
	defer stop()
	for {
		b, err := proto.Marshal(req)
		if err != nil {
			return nil, err
		}
		if _, err := s.sock.Write(b); err != nil {
			return nil, fmt.Errorf("criu rpc write: %w", err)
		}
		buf := make([]byte, 64<<10)
		n, err := s.sock.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("criu rpc read: %w", err)
		}
		resp := &rpc.CriuResp{}
		if err := proto.Unmarshal(buf[:n], resp); err != nil {
			return nil, fmt.Errorf("criu rpc: bad answer: %w", err)
		}
		if resp.GetType() != rpc.CriuReqType_NOTIFY {
			// A failed notification is why CRIU gave up.
			return resp, s.notifyErr
		}
		req = &rpc.CriuReq{Type: ptr(rpc.CriuReqType_NOTIFY), NotifySuccess: ptr(true)}
		if s.notify != nil {
			opts, nerr := s.notify(resp.GetNotify())
			if nerr != nil {
				// CRIU aborts; its answer then carries no reason of ours.
				s.notifyErr = nerr
				req.NotifySuccess = ptr(false)
			}
			req.Opts = opts
		}
	}
}

// Version asks CRIU for its version, encoded as major*10000+minor*100+sub.
func (c *Client) Version(ctx context.Context) (int, error) {
	s, err := c.startSwrk(nil, nil)
	if err != nil {
		return 0, err
	}
	resp, err := s.call(ctx, &rpc.CriuReq{Type: ptr(rpc.CriuReqType_VERSION)})
	s.done(&err)
	if err != nil {
		return 0, err
	}
	v := resp.GetVersion()
	if !resp.GetSuccess() || v == nil {
		return 0, fmt.Errorf("criu version: no answer (errno %d)", resp.GetCrErrno())
	}
	return int(v.GetMajorNumber()*10000 + v.GetMinorNumber()*100 + v.GetSublevel()), nil
}

// FormatVersion renders an encoded version as "4.1.1".
func FormatVersion(v int) string {
	return fmt.Sprintf("%d.%d.%d", v/10000, v/100%100, v%100)
}

// Gate fails with ErrNoCRIU or ErrCRIUTooOld unless a usable CRIU is there.
func (c *Client) Gate(ctx context.Context) (int, error) {
	v, err := c.Version(ctx)
	if err != nil {
		return 0, err
	}
	if v < MinVersion {
		return v, fmt.Errorf("%w: %s at %s, need >= %s (run make setup)", ErrCRIUTooOld,
			FormatVersion(v), c.cfg.Path, FormatVersion(MinVersion))
	}
	return v, nil
}

// Check runs `criu check`, CRIU's own test of the kernel, and returns its
// output when it fails.
func (c *Client) Check(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, c.cfg.Path, "check")
	cmd.Env = c.env()
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return fmt.Errorf("%w: %v", ErrNoCRIU, err)
		}
		return fmt.Errorf("criu check: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

// logErrors returns the lines of a CRIU log that explain a failure: the
// error lines, or the last lines if none is marked.
func logErrors(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "(no criu log: " + err.Error() + ")"
	}
	defer f.Close()
	var errs, tail []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// Without CAP_SYS_RESOURCE criu always logs this one; it is harmless.
		harmless := strings.Contains(line, "RLIMIT_NOFILE")
		if !harmless && (strings.Contains(line, "Error") || strings.Contains(line, "error")) {
			errs = append(errs, line)
		}
		tail = append(tail, line)
		if len(tail) > 5 {
			tail = tail[1:]
		}
	}
	if len(errs) > 8 {
		errs = errs[len(errs)-8:]
	}
	if len(errs) == 0 {
		errs = tail
	}
	return strings.Join(errs, "\n")
}

// failure builds the error for a failed CRIU call in one line, as
// cantmove and ssi migrate show it: CRIU's own message, then each other
// error its log names, once, without timestamps and source positions.
func failure(sentinel error, resp *rpc.CriuResp, err error, logPath string) error {
	var msgs []string
	add := func(m string) {
		if m = criuMessage(m); m != "" && !slices.Contains(msgs, m) {
			msgs = append(msgs, m)
		}
	}
	switch {
	case err != nil:
		add(err.Error())
	case resp != nil:
		add(resp.GetCrErrmsg())
		if len(msgs) == 0 {
			add(fmt.Sprintf("criu errno %d", resp.GetCrErrno()))
		}
	}
	for _, l := range strings.Split(logErrors(logPath), "\n") {
		add(l)
	}
	return fmt.Errorf("%w: %s", sentinel, strings.Join(msgs, "; "))
}

// criuLine is a CRIU log line: "(00.040272) ", a pid and "Error
// (criu/fsnotify.c:284): " before what it says.
var criuLine = regexp.MustCompile(`^\s*(\(\d+\.\d+\)\s*)?(\d+:\s*)?((Error|Warn)\s*\([^)]*\):\s*)?`)

// criuMessage is what a line of CRIU's says, spaces collapsed.
func criuMessage(line string) string {
	return strings.Join(strings.Fields(criuLine.ReplaceAllString(line, "")), " ")
}

// itoa is strconv.Itoa, named for the places that build CRIU keys.
func itoa(i int) string { return strconv.Itoa(i) }
