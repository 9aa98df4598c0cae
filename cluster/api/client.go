package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"ssi/raftstore"
)

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
		return ReadError(resp)
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

// SetAdmin sets an admin switch of a node (this node if req.Node is "").
func (c *Client) SetAdmin(ctx context.Context, req AdminRequest) error {
	return c.call(ctx, http.MethodPost, "/v1/admin", req, nil)
}

// Run asks the local agent to start a detached cluster process; it
// returns its cpid.
func (c *Client) Run(ctx context.Context, req RunRequest) (int, error) {
	var out struct {
		CPID int `json:"cpid"`
	}
	req.Attach = false
	return out.CPID, c.call(ctx, http.MethodPost, "/v1/run", req, &out)
}

// Balance lists the balancer's recent decisions on every node.
func (c *Client) Balance(ctx context.Context) ([]BalanceRecord, error) {
	var out []BalanceRecord
	return out, c.call(ctx, http.MethodGet, "/v1/balance", nil, &out)
}

// Drain blocks arrivals on this node and moves its processes away (or
// undoes the block); it returns once every process was tried.
func (c *Client) Drain(ctx context.Context, req DrainRequest) ([]DrainResult, error) {
	var out []DrainResult
	return out, c.callLong(ctx, http.MethodPost, "/v1/drain", req, &out)
}

// Migrate moves a process ("NODE", "home" or "balance").
func (c *Client) Migrate(ctx context.Context, cpid int, target string) error {
	return c.callLong(ctx, http.MethodPost, "/v1/migrate", MigrateRequest{CPID: cpid, Target: target}, nil)
}

// Procs lists every cluster process.
func (c *Client) Procs(ctx context.Context) ([]ProcInfo, error) {
	var out []ProcInfo
	return out, c.call(ctx, http.MethodGet, "/v1/procs", nil, &out)
}

// Kill signals a process wherever it runs.
func (c *Client) Kill(ctx context.Context, req KillRequest) error {
	return c.call(ctx, http.MethodPost, "/v1/kill", req, nil)
}

// Wait blocks until the process has ended.
func (c *Client) Wait(ctx context.Context, cpid int) (WaitResult, error) {
	var out WaitResult
	return out, c.callLong(ctx, http.MethodGet, "/v1/wait?cpid="+strconv.Itoa(cpid), nil, &out)
}

// Moves lists the recent migrations.
func (c *Client) Moves(ctx context.Context) ([]raftstore.MoveRecord, error) {
	var out []raftstore.MoveRecord
	return out, c.call(ctx, http.MethodGet, "/v1/migrations", nil, &out)
}

// RaftBench runs a benchmark on the local agent.
func (c *Client) RaftBench(ctx context.Context, req BenchRequest) (*BenchResult, error) {
	var out BenchResult
	return &out, c.call(ctx, http.MethodPost, "/v1/debug/raftbench", req, &out)
}

// SetReadBarrier turns the local agent's read barrier on or off (bench).
func (c *Client) SetReadBarrier(ctx context.Context, on bool) error {
	return c.call(ctx, http.MethodPost, "/v1/debug/barrier", map[string]bool{"off": !on}, nil)
}
