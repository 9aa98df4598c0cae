package migration

import (
	"fmt"
	"os"
	"time"
)

// Hooks are the tests' failure points: the integration tests set them in
// an agent's environment (SSI_FAIL_DUMP, SSI_CRASH_AT,
// SSI_PAUSE_RESTORE), read once at the agent's start (cmd/ssi), never on
// the migration's path itself.
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
	// PauseRestore (SSI_PAUSE_RESTORE) holds every arrival after its
	// files are checked and opened and before CRIU restores it: the
	// agent creates PauseRestore+".paused", then waits until
	// PauseRestore exists (at most PauseLimit). How the tests change
	// the file system between the check and the restore.
	PauseRestore string
}

// PauseLimit bounds a PauseRestore wait.
const PauseLimit = 2 * time.Minute

// pauseRestore is the PauseRestore hook.
func (h *Hooks) pauseRestore() {
	if h.PauseRestore == "" {
		return
	}
	_ = os.WriteFile(h.PauseRestore+".paused", nil, 0o600)
	for deadline := time.Now().Add(PauseLimit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(h.PauseRestore); err == nil {
			return
		}
	}
	fmt.Fprintf(os.Stderr, "ssi agent: %s did not appear (SSI_PAUSE_RESTORE); restoring\n", h.PauseRestore)
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
	return &Hooks{FailDump: FailDump(os.Getenv("SSI_FAIL_DUMP")), CrashAt: CrashPoint(os.Getenv("SSI_CRASH_AT")),
		PauseRestore: os.Getenv("SSI_PAUSE_RESTORE")}
}
