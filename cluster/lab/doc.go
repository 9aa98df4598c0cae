// Package lab builds an N-node ssi cluster on one machine: each node is a
// network namespace on a private bridge with its own address, a mount
// namespace of its own (pinned under the lab's directory, with its own
// /run/ssi and /var/lib/ssi, and later its own /cluster), a cgroup with an
// optional CPU quota, a state directory, and an agent.
//
// Every resource is named after the lab, so Down finds and removes all of
// them even when the lab was half built or its record is lost, and several
// labs (distinct names) can coexist, e.g. for tests running in parallel.
//
// Lab drives a node's life (Up, Start, Kill, Down) and delegates each
// resource to the type that owns it: layout (the lab's directory, record
// and object names), network (bridge, network namespaces, veths,
// partitions), cgroups, mountNS (mount namespaces and their pins) and
// agents (processes entering a node, and each node's agent).
//
// The package owns only what carries the lab's name: it must not touch
// another lab's resources nor the host's own, beyond making the mount
// points /run/ssi and /var/lib/ssi and, on cgroup v2, enabling the
// controllers the nodes' cgroups need. It knows nothing of the cluster's
// internals: an agent is a binary it runs and a health endpoint it polls;
// of cluster/ it imports only transport, for the join token.
package lab
