// Package home is /cluster/home's backend on the agreed state: it turns
// fs's Home calls into reads of this node's replica and commands through
// the leader, and the store's errors into fs's (api.HomeDomain). It holds
// no data of its own and does not import any other package of cluster/
// but api.
package home
