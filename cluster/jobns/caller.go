package jobns

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Caller is what a job takes of the process that asked for it, besides
// its uid and gid: a job runs as its caller really is, not as the agent
// (root, with a daemon's limits) that starts it. The agent reads it from
// the calling process itself; the job's init applies it (Apply, then
// setgroups with Groups) before it runs the command. CRIU dumps and
// restores all of it with the process, so it holds after a move too.
type Caller struct {
	// Groups are the caller's supplementary groups.
	Groups []uint32 `json:"groups"`
	// Umask is the caller's file mode creation mask.
	Umask uint32 `json:"umask"`
	// OOMScoreAdj is the caller's; a job's is never lower.
	OOMScoreAdj int `json:"oom_score_adj"`
	// Rlimits are the caller's resource limits, every one the kernel
	// has.
	Rlimits []Rlimit `json:"rlimits"`
}

// Rlimit is one resource limit (RLIMIT_* Resource), soft and hard, as
// getrlimit(2) gives it (RLIM_INFINITY is all ones).
type Rlimit struct {
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// NumRlimits is how many resource limits Linux has (RLIM_NLIMITS): 0
// (RLIMIT_CPU) to 15 (RLIMIT_RTTIME).
const NumRlimits = 16

// Apply makes the calling process's resource limits, oom_score_adj
// and umask the caller's; its children inherit them. Run as root
// before the job's init becomes the user: a caller's hard limit above
// the agent's, or an oom_score_adj below it, takes CAP_SYS_RESOURCE to
// set, and the values are the caller's own, so root grants nothing the
// caller lacks. An agent without that capability leaves such a limit at
// its own, lower one, and such an oom_score_adj at its own, higher one:
// a job may end up more confined than its caller, never less. Anything
// else that fails fails the job.
func (c Caller) Apply() error {
	for _, l := range c.Rlimits {
		if l.Resource < 0 || l.Resource >= NumRlimits {
			continue // a limit this kernel may not know: nothing to enforce
		}
		if err := setRlimit(l); err != nil {
			return fmt.Errorf("resource limit %d (%d/%d): %w", l.Resource, l.Cur, l.Max, err)
		}
	}
	if err := setOOMScoreAdj(c.OOMScoreAdj); err != nil {
		return err
	}
	syscall.Umask(int(c.Umask & 0o777))
	return nil
}

// setRlimit sets l, or as much of it as this process may: its hard
// limit no higher than the current one without CAP_SYS_RESOURCE.
func setRlimit(l Rlimit) error {
	// syscall.Setrlimit, not the raw call: for RLIMIT_NOFILE it also
	// stops the Go runtime from giving children the limit this process
	// started with instead.
	want := syscall.Rlimit{Cur: l.Cur, Max: l.Max}
	err := syscall.Setrlimit(l.Resource, &want)
	if !errors.Is(err, syscall.EPERM) {
		return err
	}
	var cur syscall.Rlimit
	if err := syscall.Getrlimit(l.Resource, &cur); err != nil || cur.Max >= want.Max {
		return syscall.EPERM // not a raise that was refused
	}
	want.Max = cur.Max
	want.Cur = min(want.Cur, want.Max)
	return syscall.Setrlimit(l.Resource, &want)
}

// setOOMScoreAdj writes this process's oom_score_adj unless it is
// already v (an unprivileged process may not write a value below its
// minimum, even an unchanged one).
func setOOMScoreAdj(v int) error {
	const path = "/proc/self/oom_score_adj"
	if v < -1000 || v > 1000 {
		return fmt.Errorf("oom_score_adj %d is out of range", v)
	}
	if cur, err := os.ReadFile(path); err == nil && string(cur) == strconv.Itoa(v)+"\n" {
		return nil
	}
	err := os.WriteFile(path, []byte(strconv.Itoa(v)), 0)
	if errors.Is(err, os.ErrPermission) {
		// Lowering it takes CAP_SYS_RESOURCE: higher than asked is
		// allowed, never lower.
		if cur, rerr := os.ReadFile(path); rerr == nil {
			if n, perr := strconv.Atoi(strings.TrimSpace(string(cur))); perr == nil && n >= v {
				return nil
			}
		}
	}
	if err != nil {
		return fmt.Errorf("oom_score_adj %d: %w", v, err)
	}
	return nil
}
