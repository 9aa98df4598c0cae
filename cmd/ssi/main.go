// Command ssi is the single binary of the ssi single-system-image runtime:
// the node agent, the user's commands, and the lab.
package main

import (
	"errors"
	"fmt"
	"os"

	"ssi/migrate"
)

func main() {
	// Children (agents, cluster processes) must not inherit our fds.
	_ = migrate.SealInheritedFDs()
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	var ec exitCodeError
	if errors.As(err, &ec) {
		os.Exit(ec.code)
	}
	fmt.Fprintf(os.Stderr, "ssi: %v\n", err)
	os.Exit(1)
}

// exitCodeError makes ssi exit with code and print nothing: the command it
// ran has already spoken.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
