package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"ssi/raftstore"
)

// NodeInfo is one line of `ssi nodes`: agreed facts from the Raft state
// joined with the node's latest load sample.
type NodeInfo struct {
	Name     string          `json:"name"`
	Addr     string          `json:"addr"`
	State    string          `json:"state"` // up, down
	Role     string          `json:"role"`  // leader, follower
	Voter    bool            `json:"voter"`
	Load     float64         `json:"load"`
	CPUs     float64         `json:"cpus"`
	MemTotal uint64          `json:"mem_total"`
	MemFree  uint64          `json:"mem_free"`
	Procs    int             `json:"procs"`
	Admin    map[string]bool `json:"admin"`
	LastSeen *time.Time      `json:"last_seen,omitempty"`
}

// StatusInfo is `ssi status`: the cluster's health in a few lines.
type StatusInfo struct {
	Node         string `json:"node"` // the node that answered
	ClusterID    string `json:"cluster_id"`
	Leader       string `json:"leader"`
	NodesUp      int    `json:"nodes_up"`
	NodesTotal   int    `json:"nodes_total"`
	Voters       int    `json:"voters"`
	Quorum       bool   `json:"quorum"`
	Procs        int    `json:"procs"`
	AppliedIndex uint64 `json:"applied_index"`
	// StaleReads: no quorum answered the read barrier, so this node
	// serves reads from its replica as it is.
	StaleReads bool `json:"stale_reads"`
}

// apiError is the body of every failed API call.
type apiError struct {
	Error string `json:"error"`
	// Code names the raftstore error kind, so that errors.Is holds on the
	// far side of a forwarded command.
	Code string `json:"code,omitempty"`
	// Errno names the errno a /cluster write would get ("EBUSY", ...).
	Errno string `json:"errno,omitempty"`
}

// Client talks to the local agent over its unix socket.
type Client struct {
	http   *http.Client
	socket string
}

// NewClient returns a client of the agent listening on socket.
func NewClient(socket string) *Client {
	return &Client{socket: socket, http: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}},
	}}
}

// ErrNoAgent means nothing answers on the agent's socket.
var ErrNoAgent = errors.New("no agent answers (is `ssi agent` running on this node?)")

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, c.http, method, path, in, out)
}

// callLong is call without the client's timeout, for requests that last
// as long as what they wait for (a migration, a process's end); ctx
// bounds them.
func (c *Client) callLong(ctx context.Context, method, path string, in, out any) error {
	hc := *c.http
	hc.Timeout = 0
	return c.do(ctx, &hc, method, path, in, out)
}

func (c *Client) do(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) && ne.Op == "dial" {
			return fmt.Errorf("%w: %v", ErrNoAgent, ne.Err)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) == nil && e.Error != "" {
			if e.Errno != "" {
				return errnoError(e.Errno, e.Error)
			}
			return errors.New(e.Error)
		}
		return fmt.Errorf("agent: %s", resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Nodes lists every node of the cluster.
func (c *Client) Nodes(ctx context.Context) ([]NodeInfo, error) {
	var out []NodeInfo
	return out, c.call(ctx, http.MethodGet, "/v1/nodes", nil, &out)
}

// Status reports the cluster's health.
func (c *Client) Status(ctx context.Context) (*StatusInfo, error) {
	var out StatusInfo
	return &out, c.call(ctx, http.MethodGet, "/v1/status", nil, &out)
}

// CreateToken makes a new join token, valid on every member.
func (c *Client) CreateToken(ctx context.Context) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	return out.Token, c.call(ctx, http.MethodPost, "/v1/tokens", nil, &out)
}

// AdminRequest sets one of a node's admin switches.
type AdminRequest struct {
	Node   string `json:"node"`
	Switch string `json:"switch"`
	Value  bool   `json:"value"`
}

// SetAdmin sets an admin switch of a node (this node if req.Node is "").
func (c *Client) SetAdmin(ctx context.Context, req AdminRequest) error {
	return c.call(ctx, http.MethodPost, "/v1/admin", req, nil)
}

// writeJSON answers v, or err as {"error": ...} with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, apiError{Error: err.Error(), Code: raftstore.ErrorCode(err)})
}
