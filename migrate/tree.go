package migrate

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tree returns root and every descendant of it, parents before children.
// Children are read from every thread's children file: a Go program's
// children hang off whichever thread forked them.
func Tree(root int) []int {
	out := []int{root}
	seen := map[int]bool{root: true}
	for i := 0; i < len(out); i++ {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", out[i]))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
		}
	}
	return out
}

// SignalTree sends sig to every process of the tree rooted at root; it
// returns the first error other than "already gone".
func SignalTree(root int, sig syscall.Signal) error {
	var first error
	pids := Tree(root)
	if sig == syscall.SIGCONT {
		// Children first: a parent resumed before its stopped child may
		// see it stopped (waitpid with WUNTRACED; CRIU leaves every task
		// with a SIGSTOP) and take it for a job stopped by ^Z, as bash
		// does.
		slices.Reverse(pids)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) && first == nil {
			first = err
		}
	}
	return first
}

// FDKey is CRIU's name for what fd of pid refers to, e.g. "pipe:[1234]"
// (the form RestoreOptions.InheritFDs wants), or "" if fd is not open.
func FDKey(pid, fd int) string {
	s, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	if err != nil {
		return ""
	}
	return s
}

// Stat is what ssi reads of a process in /proc/PID/stat.
type Stat struct {
	Ticks uint64 // CPU time used, user + system, in clock ticks
	RSS   uint64 // resident bytes
	Start uint64 // start time, in clock ticks after boot
}

// ReadStat reads /proc/PID/stat; false if the process is gone.
func ReadStat(pid int) (Stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return Stat{}, false
	}
	// The fields after the command, which may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return Stat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 22 {
		return Stat{}, false
	}
	num := func(k int) uint64 { v, _ := strconv.ParseUint(f[k], 10, 64); return v }
	return Stat{Ticks: num(11) + num(12), RSS: num(21) * uint64(os.Getpagesize()), Start: num(19)}, true
}

// Runnable is how long pid's threads have been runnable, running or
// waiting for a CPU (/proc/PID/task/*/schedstat), which includes the
// time a CPU quota held them back: over an interval, the CPUs' worth
// the process would use if nothing did. 0 if the process is gone.
func Runnable(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		run, _ := strconv.ParseUint(f[0], 10, 64)
		wait, _ := strconv.ParseUint(f[1], 10, 64)
		sum += time.Duration(run + wait)
	}
	return sum
}
