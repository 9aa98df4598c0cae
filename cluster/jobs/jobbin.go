package jobs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// jobInits are the executables jobs' inits run (ssi job-init), by data
// directory, installed once each.
var jobInits struct {
	sync.Mutex
	path map[string]string
}

// InitPath is a copy of this agent's binary in the data directory
// (dataDir/bin), named by its contents. Not the binary itself: rebuilt
// or upgraded, it is replaced, and every job still running the old one
// would hold a deleted executable that CRIU cannot carry ("link
// remap"); nor may it lie under a job's own /tmp or /dev/shm, where the
// job cannot see it. A content name is never replaced while jobs map
// it, and every agent of the same build names the same path, which a
// move needs.
func InitPath(dataDir string) (string, error) {
	jobInits.Lock()
	defer jobInits.Unlock()
	if p, ok := jobInits.path[dataDir]; ok {
		return p, nil
	}
	// The running binary's own bytes, even if its file was replaced.
	p, err := copyByContent("/proc/self/exe", filepath.Join(dataDir, "bin"))
	if err != nil {
		return "", err
	}
	if jobInits.path == nil {
		jobInits.path = map[string]string{}
	}
	jobInits.path[dataDir] = p
	return p, nil
}

// copyByContent copies the executable src into dir as <hash of its
// contents>/ssi, unless it is there already.
func copyByContent(src, dir string) (string, error) {
	f, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	// dir/<hash>/ssi: still "ssi" to ps inside the job.
	sub := filepath.Join(dir, hex.EncodeToString(h.Sum(nil))[:16])
	dst := filepath.Join(sub, "ssi")
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	dir = sub
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".ssi-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		tmp.Close()
		return "", err
	}
	if _, err := io.Copy(tmp, f); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("installing the job init: %w", err)
	}
	return dst, nil
}
