// Package jobs owns the cluster processes running on this node: the job
// table and its one lock, starting a job (ssi run, detached or attached
// to a stdio session) as its caller really is (uid, gid and groups from
// the socket's peer credentials; resource limits, umask and
// oom_score_adj read from the calling process itself, the request being
// trusted only to lower a soft limit) and within what one user may ask
// (MaxArgEnv, Config.MaxPerUser), here or placed on another node from
// its start (the home lists it there and asks; that node starts it when
// the agreed state and the asker's certificate agree: place.go,
// HandleStart, SweepUnstarted), supervising it until it ends, its
// cgroups, the records on disk that let the next agent adopt it after a
// restart, signals (ssi kill, here or forwarded to the node it runs on),
// ssi wait, the samples telemetry sends, why a job cannot move, and the
// job init binary.
//
// "A process never runs twice" has its one owner here: whether a job is
// frozen for a move (moving) or was killed because it runs elsewhere now
// (gone) is private to Job and changes only through BeginMove and
// Finish; kill and the samples read it through Live.
//
// It does not import cluster (the root), cluster/migration or
// membership, and of peer only its helpers (Retry, FindProc, Caller,
// CheckMember): what it
// needs of the cluster comes in through the Cluster interface, and the
// migration transaction settles a move an earlier agent left half done
// through Resolver. It knows nothing of CRIU beyond reading and signalling
// process trees (package migrate's helpers).
package jobs
