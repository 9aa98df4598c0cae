// Package view is the read side of the agent: the agreed state joined
// with the nodes' telemetry, as `ssi nodes`, `ps`, `status` and
// `migrations` answer it and as /cluster renders it (fs.View), plus the
// few writes /cluster's control files turn into commands (admin switches,
// lock, where). Every read passes the read barrier first. It decides who
// may do what; fs/ only renders and passes the caller's uid. It imports
// no package of cluster/ above api, telemetry and transport.
package view
