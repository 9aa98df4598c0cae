package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// What the kernel may keep of /cluster is decided here and in Mount.
//
// The rule (CONTRACT.md, "Consistency"): a read that starts after a write
// returned on any node reflects that write. Whatever the kernel keeps, it
// answers from without asking, so:
//   - /cluster/home keeps nothing, whatever the configuration: entry and
//     attribute timeouts are 0, and every lookup, getattr, readdir,
//     readlink and open passes the backend's barrier (homeFS). Cached pages
//     survive an open only while the data's version is unchanged.
//   - /cluster/proc, /cluster/nodes and /cluster/admin keep entries and
//     attributes for fs.entry_timeout and fs.attr_timeout: 0 by default,
//     since a process started or moved on one node must show at once on
//     every node; contents are rendered at open (direct I/O).
//   - No failed lookup (ENOENT) is kept: Mount sets no NegativeTimeout, so
//     go-fuse returns the error and the kernel keeps no negative entry
//     (timeout 0). A name another node just made is found at once.
//   - Mount gives go-fuse no default timeouts: it would replace every 0 a
//     node answers with its default (bridge.go, setEntryOutTimeout), and 0
//     is what the home needs. Each node sets its own instead.
//   - The names of /cluster itself (proc, nodes, admin, home) never
//     change while it is mounted: the kernel may keep those entries, so
//     that a walk into the home does not pass one barrier more per path.
type cacheTimes struct {
	attr, entry time.Duration
}

// fixedEntry is how long the kernel may keep /cluster's own names.
const fixedEntry = time.Hour

func (c cacheTimes) attrOut(out *fuse.AttrOut) { out.SetTimeout(c.attr) }

// reply answers a lookup that found child: with its attributes, so that
// the kernel keeps no zero size, for as long as its Getattr allows; the
// name for entry.
func reply(ctx context.Context, child *gofs.Inode, entry time.Duration, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if ga, ok := child.Operations().(gofs.NodeGetattrer); ok {
		var a fuse.AttrOut
		if e := ga.Getattr(ctx, nil, &a); e != 0 {
			return nil, e
		}
		out.Attr = a.Attr
		out.SetAttrTimeout(a.Timeout())
	}
	out.SetEntryTimeout(entry)
	return child, 0
}

// lookupChild answers a lookup in a directory whose children were added
// once (AddChild).
func lookupChild(ctx context.Context, dir *gofs.Inode, name string, entry time.Duration, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	child := dir.GetChild(name)
	if child == nil {
		return nil, syscall.ENOENT
	}
	return reply(ctx, child, entry, out)
}
