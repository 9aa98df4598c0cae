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

	"ssi/cluster/transport"
	"ssi/raftstore"
)

// Peer RPC: HTTP/1.1 on the cluster port's ProtoRPC, so every request is
// mutually authenticated TLS and the handler knows which node asks.

// maxPeerBody bounds a request body from a peer.
const maxPeerBody = 4 << 20

// joinRequest registers a node with the leader.
type joinRequest struct {
	Name   string  `json:"name"`
	Addr   string  `json:"addr"`
	CPUs   float64 `json:"cpus"`
	Memory uint64  `json:"memory"`
}

// applyResult is the leader's answer to a forwarded command.
type applyResult struct {
	Result json.RawMessage `json:"result,omitempty"`
}

// peerClient dials other agents' ProtoRPC with our identity.
func peerClient(id *transport.Identity) *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return transport.Dial(ctx, addr, transport.ProtoRPC, id)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// peerHandler serves other agents.
func (a *Agent) peerHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("POST /v1/apply", a.handleApply)
	m.HandleFunc("POST /v1/join", a.handleJoin)
	m.HandleFunc("POST /v1/telemetry", a.handleTelemetry)
	m.HandleFunc("POST /v1/applied", a.handleApplied)
	m.HandleFunc("POST /v1/migrate", a.handlePeerMigrate)
	m.HandleFunc("POST /v1/kill", a.handlePeerKill)
	return m
}

// handleApply applies a command that a follower forwarded. The bytes are
// validated by the store before they reach the log.
func (a *Agent) handleApply(w http.ResponseWriter, r *http.Request) {
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPeerBody))
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	res, err := s.ApplyEncoded(r.Context(), b)
	if err != nil {
		writeErr(w, applyStatus(err), err)
		return
	}
	raw, _ := json.Marshal(res)
	writeJSON(w, http.StatusOK, applyResult{Result: raw})
}

// applyStatus maps an apply error to the status the forwarder acts on:
// 421 means "ask the leader", anything else is final.
func applyStatus(err error) int {
	if errors.Is(err, raftstore.ErrNotLeader) {
		return http.StatusMisdirectedRequest
	}
	return http.StatusConflict
}

func (a *Agent) handleTelemetry(w http.ResponseWriter, r *http.Request) {
	var s Sample
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&s); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	// A node speaks only for itself: its certificate names it.
	if peer := transport.PeerName(connOf(r)); peer != "" && peer != s.Node {
		writeErr(w, http.StatusForbidden, fmt.Errorf("%s may not report for %s", peer, s.Node))
		return
	}
	a.telemetry.Put(s)
	writeJSON(w, http.StatusOK, struct{}{})
}

// connOf is the connection of a request, set by ConnContext.
func connOf(r *http.Request) net.Conn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return c
}

type connKey struct{}

// apply applies cmd through the leader: here if this node leads, else
// forwarded. It retries while there is no leader, until ctx ends.
func (a *Agent) apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error) {
	s, err := a.member()
	if err != nil {
		return nil, err
	}
	if res, err := s.Apply(ctx, cmd); !errors.Is(err, raftstore.ErrNotLeader) {
		if err != nil {
			return nil, err
		}
		raw, _ := json.Marshal(res)
		return raw, nil
	}
	b, err := raftstore.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	var out applyResult
	if err := a.forwardRaw(ctx, "/v1/apply", b, &out); err != nil {
		return nil, err
	}
	return out.Result, nil
}

// forward sends a JSON request to the leader, waiting for one to exist.
func (a *Agent) forward(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return a.forwardRaw(ctx, path, b, out)
}

// forwardRaw posts body to the leader's path, retrying while the leader
// is unknown or changes under us.
func (a *Agent) forwardRaw(ctx context.Context, path string, body []byte, out any) error {
	s, err := a.member()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, addr := s.Leader()
		if addr != "" {
			err = a.post(ctx, addr, path, body, out)
			if err == nil || !errors.Is(err, errRetry) {
				return err
			}
		} else {
			err = raftstore.ErrNotLeader
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader answered: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// errRetry marks failures worth retrying with the next leader.
var errRetry = errors.New("retry")

// post sends one request to a peer.
func (a *Agent) post(ctx context.Context, addr, path string, body []byte, out any) error {
	a.mu.RLock()
	c := a.peers
	a.mu.RUnlock()
	return a.postWith(ctx, c, addr, path, body, out)
}

// postLong is post without the peer client's timeout, for requests that
// last as long as what they do (a migration); ctx bounds them.
func (a *Agent) postLong(ctx context.Context, addr, path string, body []byte, out any) error {
	a.mu.RLock()
	c := *a.peers
	a.mu.RUnlock()
	c.Timeout = 0
	return a.postWith(ctx, &c, addr, path, body, out)
}

func (a *Agent) postWith(ctx context.Context, c *http.Client, addr, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errRetry, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if out == nil {
			return nil
		}
		return json.NewDecoder(io.LimitReader(resp.Body, maxPeerBody)).Decode(out)
	}
	var e apiError
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
	err = fmt.Errorf("%s: %s", addr, e.Error)
	if resp.StatusCode == http.StatusMisdirectedRequest || resp.StatusCode == http.StatusServiceUnavailable {
		return fmt.Errorf("%w: %v", errRetry, err)
	}
	if e.Error == "" {
		e.Error = resp.Status
	}
	if e.Errno != "" {
		return errnoError(e.Errno, e.Error)
	}
	if rerr := raftstore.ErrorFromCode(e.Code, e.Error); rerr != nil {
		return rerr
	}
	return errors.New(e.Error)
}
