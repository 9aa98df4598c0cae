// Package api is the agent's local API as its callers see it: the
// request and answer types of the unix socket, the Client that `ssi`
// commands use (with the caller's end of an attached stdio stream), who
// is asking (the socket peer's credentials), and the one error table: how
// an error is encoded in an answer, decoded on the far side, and mapped
// from the cluster's errors to the errnos of the contract.
//
// It sits at the bottom with cluster/wire: it does not import any other
// package of cluster/, and holds no state of the agent.
package api
