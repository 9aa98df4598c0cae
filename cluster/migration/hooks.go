package migration

import (
	"fmt"
	"os"
)

// Hooks are the tests' failure points: the integration tests set them in
// an agent's environment (SSI_FAIL_DUMP, SSI_CRASH_AT), read once at the
// agent's start (cmd/ssi), never on the migration's path itself.
type Hooks struct {
	// FailDump makes each dump fail: inside CRIU with the tree frozen
	// (FailInCRIU) or in ssi just after a successful dump
	// (FailAfterDump). How the tests check that a failed move harms
	// nothing.
	FailDump FailDump
	// CrashAt ends this agent at a named step of an arrival: how the
	// tests crash a destination at an exact point of a move.
	CrashAt CrashPoint
	// Crash is what CrashAt does (os.Exit(99) if nil); unit tests record
	// instead.
	Crash func(CrashPoint)
}

// FailDump names where a dump is made to fail.
type FailDump string

const (
	FailInCRIU    FailDump = "criu"
	FailAfterDump FailDump = "after"
)

// CrashPoint names a step of an arrival.
type CrashPoint string

const (
	CrashRestored CrashPoint = "restored" // the copy restored here, stopped, before the source heard
	CrashVerdict  CrashPoint = "verdict"  // the source's verdict received, before acting on it
)

func (h *Hooks) crash(at CrashPoint) {
	if h.CrashAt != at {
		return
	}
	if h.Crash != nil {
		h.Crash(at)
		return
	}
	fmt.Fprintf(os.Stderr, "ssi agent: crashing at %q (SSI_CRASH_AT)\n", at)
	os.Exit(99)
}

// HooksFromEnv reads the tests' failure points from an agent's
// environment.
func HooksFromEnv() *Hooks {
	return &Hooks{FailDump: FailDump(os.Getenv("SSI_FAIL_DUMP")), CrashAt: CrashPoint(os.Getenv("SSI_CRASH_AT"))}
}
