package jobs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"ssi/cluster/api"
)

// What one user may ask of the cluster is bounded: every node keeps
// every process's argv in the agreed state, so its size is capped like
// execve(2) caps it, and how many processes one uid may have at once is
// a setting (Config.MaxPerUser).

// MaxArgEnv bounds a job's argv and environment together, in bytes as
// execve(2) counts them (each string with its terminating NUL).
const MaxArgEnv = 128 << 10

// maxRunBody bounds a run request on the wire: MaxArgEnv of strings,
// each byte escaped in JSON at worst as \u00XX, and the rest.
const maxRunBody = 6*MaxArgEnv + 64<<10

// refusal is a run refused for a reason the caller can do something
// about; Errno names it as the kernel would (E2BIG, EAGAIN).
type refusal struct {
	status int
	errno  string
	msg    string
}

func (r *refusal) Error() string { return r.msg }

// answer writes err: a refusal with its errno, anything else with
// status.
func answer(w http.ResponseWriter, status int, err error) {
	var rf *refusal
	if errors.As(err, &rf) {
		api.WriteJSON(w, rf.status, api.Error{Error: rf.msg, Errno: rf.errno})
		return
	}
	api.WriteError(w, status, err)
}

// tooBig refuses argv and env over MaxArgEnv.
func tooBig(argv, env []string) error {
	n := 0
	for _, s := range argv {
		n += len(s) + 1
	}
	for _, s := range env {
		n += len(s) + 1
	}
	if n <= MaxArgEnv {
		return nil
	}
	return errTooBig(n)
}

// errTooBig is the E2BIG refusal of n bytes of argv and env (0: too
// many to read).
func errTooBig(n int) error {
	size := ""
	if n > 0 {
		size = fmt.Sprintf(" %d bytes,", n)
	}
	return &refusal{status: http.StatusRequestEntityTooLarge, errno: "E2BIG",
		msg: fmt.Sprintf("argument list too long (E2BIG): the command line and environment take%s "+
			"more than the %d bytes a cluster process may have", size, MaxArgEnv)}
}

// userLocks serialise the starts of each uid on this node, so that two
// at once cannot both pass its limit here.
type userLocks struct {
	mu sync.Mutex // protects m
	m  map[uint32]*sync.Mutex
}

func (u *userLocks) of(uid uint32) *sync.Mutex {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[uint32]*sync.Mutex{}
	}
	l, ok := u.m[uid]
	if !ok {
		l = &sync.Mutex{}
		u.m[uid] = l
	}
	return l
}

// admit lets uid start one more job unless it has Config.MaxPerUser
// cluster processes already (root has no limit). The count is of the
// agreed state, past the read barrier: every process of uid, on every
// node. Call release (once or more) once the job is registered or has
// failed to start; until then, the next start of uid on this node waits.
func (t *Table) admit(ctx context.Context, uid uint32) (release func(), err error) {
	if uid == 0 || t.cfg.MaxPerUser <= 0 {
		return func() {}, nil
	}
	l := t.starting.of(uid)
	l.Lock()
	n, err := t.countOf(ctx, uid)
	if err != nil {
		l.Unlock()
		return nil, err
	}
	if n >= t.cfg.MaxPerUser {
		l.Unlock()
		return nil, &refusal{status: http.StatusTooManyRequests, errno: "EAGAIN",
			msg: fmt.Sprintf("too many cluster processes (EAGAIN): uid %d has %d, the most jobs.max_per_user allows; "+
				"end one (ssi kill) and try again", uid, n)}
	}
	return sync.OnceFunc(l.Unlock), nil
}

// countOf is how many cluster processes uid has, anywhere.
func (t *Table) countOf(ctx context.Context, uid uint32) (int, error) {
	// Stale (no quorum): this replica as it is; registering fails then
	// anyway.
	if _, err := t.c.Fresh(ctx); err != nil {
		return 0, err
	}
	s, err := t.c.Store()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range s.Procs() {
		if p.UID == int(uid) {
			n++
		}
	}
	return n, nil
}
