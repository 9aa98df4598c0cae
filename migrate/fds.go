package migrate

import "golang.org/x/sys/unix"

// SealInheritedFDs marks every file descriptor above stderr close-on-exec.
// Go opens its own files close-on-exec, but descriptors inherited from
// whoever started this process are passed on to every child: a process
// that holds such a file (opened in another mount namespace, or a pipe
// to a stranger) cannot be checkpointed. Programs that start cluster
// processes call this first.
func SealInheritedFDs() error {
	return unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
}
