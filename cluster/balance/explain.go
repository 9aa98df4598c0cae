package balance

import (
	"slices"
	"sync"

	"ssi/cluster/api"
)

// Record is one thing the balancer did or chose not to do.
type Record = api.BalanceRecord

// keepMoves is how many moves and failures a node remembers.
const keepMoves = 64

// journal keeps the recent moves and, per process still considered,
// why it was last left where it is: a rejection repeats every round, so
// only the latest one counts.
type journal struct {
	mu       sync.Mutex // protects the rest
	moves    []Record
	rejected map[int]Record
}

func (j *journal) moved(r Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.moves = append(j.moves, r)
	if n := len(j.moves) - keepMoves; n > 0 {
		j.moves = slices.Delete(j.moves, 0, n)
	}
	delete(j.rejected, r.CPID)
}

// considered replaces the rejections with this round's: a process no
// longer considered (gone, moved away) is forgotten.
func (j *journal) considered(rs []Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.rejected = map[int]Record{}
	for _, r := range rs {
		j.rejected[r.CPID] = r
	}
}

// records are the moves, oldest first, then the standing rejections by
// cpid.
func (j *journal) records() []Record {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := slices.Clone(j.moves)
	var rej []Record
	for _, r := range j.rejected {
		rej = append(rej, r)
	}
	slices.SortFunc(rej, func(a, b Record) int { return a.CPID - b.CPID })
	return append(out, rej...)
}
