package cluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"ssi/cluster/jobns"
)

// jobInit is the executable a job's init runs (ssi job-init), found once.
var jobInit struct {
	once sync.Once
	path string
	err  error
}

// jobInitPath is this agent's own binary, unless it lies where a job
// cannot see it (under a job's own /tmp or /dev/shm, e.g. a checkout in
// /tmp): CRIU could not then carry the init's executable ("link remap").
// Then it is a copy in the data directory, named by its contents, so an
// upgraded agent never replaces a file that running jobs map, and every
// agent of the same build names the same path.
func (a *Agent) jobInitPath() (string, error) {
	jobInit.once.Do(func() {
		self, err := os.Executable()
		if err != nil {
			jobInit.err = err
			return
		}
		if self, err = filepath.EvalSymlinks(self); err != nil {
			jobInit.err = err
			return
		}
		hidden := false
		for _, p := range jobns.OwnPrefixes() {
			hidden = hidden || strings.HasPrefix(self, p)
		}
		if !hidden {
			jobInit.path = self
			return
		}
		jobInit.path, jobInit.err = copyByContent(self, filepath.Join(a.cfg.DataDir, "bin"))
	})
	return jobInit.path, jobInit.err
}

// copyByContent copies the executable src into dir as ssi-<hash of its
// contents>, unless it is there already.
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
	dst := filepath.Join(dir, "ssi-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
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
