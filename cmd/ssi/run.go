package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ssi/cluster/api"
	"ssi/cluster/jobns"
)

// runOptions are ssi run's flags.
type runOptions struct {
	detach, best, tty bool
	node              string
}

func newRunCmd() *cobra.Command {
	var opts runOptions
	cmd := &cobra.Command{
		Use:   "run [-d] [-t] [--node N|--best] -- CMD [ARGS...]",
		Short: "Start CMD as a cluster process (migratable); -d prints its cpid",
		Long: `Start CMD as a cluster process on this node: PID 1 of its own PID
namespace and session, with this shell's working directory and
environment, registered in the cluster with a cpid that every node's
/cluster/proc shows.

Attached (the default), its stdin, stdout and stderr are relayed to this
terminal wherever the process runs, even after it migrates; Ctrl-C
reaches it; ssi run exits with its exit code. -d detaches and prints the
cpid alone.

-t gives the process a terminal of its own (a pty inside its job, which
moves with it): this terminal is put in raw mode while it runs, so every
key (Ctrl-C, Ctrl-Z too) goes to the process's terminal, and its window
size follows this one's. For an interactive shell, a REPL or a
full-screen program. Without a terminal on stdin it warns and gives the
process one of 80x24.

--node N starts it directly on node N, --best on the node the placement
policy picks (the one "balance" picks for a move): no checkpoint, no
move. Its home stays this node (the one that vouches for you), so its
stdio, exit code, cwd, environment, limits and umask are as they would be
here; it can be moved afterwards like any other.`,
		Example: "  ssi run -d -- sleep 1000\n  ssi run -- ./simulate --steps 1000\n  ssi run -t -- bash",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRun(cmd, args, opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.detach, "detach", "d", false, "detach and print the cpid")
	cmd.Flags().BoolVarP(&opts.tty, "tty", "t", false, "give the process a terminal of its own, relayed to this one")
	cmd.Flags().StringVar(&opts.node, "node", "", "run it on this node")
	cmd.Flags().BoolVar(&opts.best, "best", false, "run it on the node the placement policy picks (as balance does)")
	return cmd
}

// runRun is ssi run's body: it checks the flags, then starts args
// detached or attached.
func runRun(cmd *cobra.Command, args []string, opts runOptions) error {
	if opts.node != "" && opts.best {
		return errors.New("give --node or --best, not both")
	}
	if opts.tty && opts.detach {
		return errors.New("-t needs an attached caller: give -t or -d, not both")
	}
	target := opts.node
	if opts.best {
		target = "balance"
	}
	c, req, err := newRunRequest(cmd, args, target)
	if err != nil {
		return err
	}
	if opts.detach {
		return runDetached(cmd, c, req)
	}
	return runAttached(cmd, c, req, opts.tty)
}

// newRunRequest is the start of argv on target (see api.RunRequest.Node)
// as this process would run it: in its directory, with its environment
// and limits; and the client of this node's agent to ask.
func newRunRequest(cmd *cobra.Command, argv []string, target string) (*api.Client, api.RunRequest, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, api.RunRequest{}, err
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, api.RunRequest{}, err
	}
	return api.NewClient(cfg.Socket), api.RunRequest{Argv: argv, Dir: dir, Env: os.Environ(), Node: target,
		NofileSoft: nofileBeforeGo(cmd.Context())}, nil
}

// nofileBeforeGo is the soft RLIMIT_NOFILE this process started with if
// the Go runtime raised it (to the hard limit less one: see package
// syscall), else 0. The agent reads the caller's limits from this
// process, and a job must get its user's soft limit, not Go's: a child
// has it back, since Go restores it for the programs it starts.
func nofileBeforeGo(ctx context.Context) uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil || l.Max == 0 || l.Cur != l.Max-1 {
		return 0
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/bin/sh", "-c", "ulimit -Sn").Output()
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
	if err != nil { // "unlimited"
		return 0
	}
	return n
}

// runDetached starts req and prints its cpid.
func runDetached(cmd *cobra.Command, c *api.Client, req api.RunRequest) error {
	cpid, err := c.Run(cmd.Context(), req)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), cpid)
	return nil
}

// runAttached starts req and relays this terminal to it until it exits;
// a non-zero exit code becomes an exitCodeError.
func runAttached(cmd *cobra.Command, c *api.Client, req api.RunRequest, tty bool) error {
	var term *callerTerm
	if tty {
		term = newCallerTerm(os.Stdin, os.Stdout)
		req.TTY, req.Size = true, term.size()
		if term.in < 0 {
			fmt.Fprintf(os.Stderr, "ssi run: stdin is not a terminal: the process gets one of %dx%d all the same\n",
				req.Size.Cols, req.Size.Rows)
		}
	}
	at, err := c.RunAttached(cmd.Context(), req)
	if err != nil {
		return err
	}
	if term != nil {
		if err := term.makeRaw(); err != nil {
			fmt.Fprintf(os.Stderr, "ssi run: this terminal stays as it is: %v\n", err)
		}
		// Every way out of runAttached passes here; a signal that would
		// end us is caught below and passed on instead.
		defer term.restore()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				_ = at.Resize(term.size())
			}
		}()
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2)
	code, err := at.Relay(os.Stdin, os.Stdout, os.Stderr, sigs)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCodeError{code}
	}
	return nil
}

// callerTerm is the terminal of `ssi run -t`'s caller: where the size of
// the process's terminal comes from, and raw while the process runs.
type callerTerm struct {
	in    int // stdin's descriptor if it is a terminal, else -1
	sized int // the terminal to read the size from (stdin's, else stdout's), or -1
	saved *unix.Termios
	raw   atomic.Bool // in raw mode now (warnf asks from other goroutines)
}

func newCallerTerm(stdin, stdout *os.File) *callerTerm {
	t := &callerTerm{in: -1, sized: -1}
	if isTerminal(int(stdin.Fd())) {
		t.in = int(stdin.Fd())
	}
	for _, f := range []*os.File{stdin, stdout} {
		if isTerminal(int(f.Fd())) {
			t.sized = int(f.Fd())
			break
		}
	}
	return t
}

func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
}

// size is the terminal's size now, or jobns.DefaultWinsize without one.
func (t *callerTerm) size() jobns.Winsize {
	if t.sized >= 0 {
		if w, err := unix.IoctlGetWinsize(t.sized, unix.TIOCGWINSZ); err == nil && w.Row > 0 && w.Col > 0 {
			return jobns.Winsize{Rows: w.Row, Cols: w.Col, XPixel: w.Xpixel, YPixel: w.Ypixel}
		}
	}
	return jobns.DefaultWinsize
}

// makeRaw puts stdin's terminal in raw mode (cfmakeraw(3)): no echo, no
// line editing, no signals from keys, no output processing, bytes as
// they come; the process's own pty does all of that.
func (t *callerTerm) makeRaw() error {
	if t.in < 0 {
		return nil
	}
	old, err := unix.IoctlGetTermios(t.in, unix.TCGETS)
	if err != nil {
		return err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(t.in, unix.TCSETS, &raw); err != nil {
		return err
	}
	t.saved = old
	t.raw.Store(true)
	return nil
}

// restore gives the terminal back as makeRaw found it.
func (t *callerTerm) restore() {
	if t.saved != nil {
		_ = unix.IoctlSetTermios(t.in, unix.TCSETS, t.saved)
		t.saved = nil
		t.raw.Store(false)
	}
}

// warnf writes a message to w; in raw mode its line feeds get the
// carriage return the terminal no longer adds. t may be nil.
func (t *callerTerm) warnf(w io.Writer, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if t != nil && t.raw.Load() {
		b := make([]byte, 0, len(msg)+4)
		for i := 0; i < len(msg); i++ {
			if msg[i] == '\n' {
				b = append(b, '\r')
			}
			b = append(b, msg[i])
		}
		msg = string(b)
	}
	fmt.Fprint(w, msg)
}
