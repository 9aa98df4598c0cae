package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// Peer RPC: HTTP/1.1 on the cluster port's ProtoRPC, so every request is
// mutually authenticated TLS and the handler knows which node asks.

// MaxBody bounds a request body from a peer, and a peer's answer.
const MaxBody = 4 << 20

// ApplyPath is where the leader takes forwarded commands (HandleApply).
const ApplyPath = "/v1/apply"

// applyResult is the leader's answer to a forwarded command.
type applyResult struct {
	Result json.RawMessage `json:"result,omitempty"`
}

// HandleApply applies a command that a follower forwarded, if its
// caller may send it (CheckMember, Authorize): the caller is the node its
// certificate names, never one the command names. The bytes are
// validated by the store before they reach the log.
func (c *Cluster) HandleApply(w http.ResponseWriter, r *http.Request) {
	s, err := c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	if !s.IsLeader() {
		// Checked first: a follower's replica may lag, and a refusal
		// from it would be final where the leader's answer is due.
		api.WriteError(w, http.StatusMisdirectedRequest, raftstore.ErrNotLeader)
		return
	}
	cmd, err := raftstore.DecodeCommand(b)
	if err != nil {
		api.WriteError(w, ApplyStatus(err), err)
		return
	}
	caller, serial := Caller(api.ConnOf(r))
	err = CheckMember(s, caller, serial)
	if err == nil {
		if o, ok := cmd.(raftstore.Once); ok {
			cmd = o.Cmd // the policy is the wrapped command's
		}
		err = Authorize(s, caller, cmd)
	}
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			c.log.Warn("refused a forwarded command", "peer", caller, "command", cmd.Type(), "err", err)
			api.WriteErrno(w, err)
		} else {
			api.WriteError(w, ApplyStatus(err), err)
		}
		return
	}
	res, err := s.ApplyEncoded(r.Context(), b)
	if err != nil {
		api.WriteError(w, ApplyStatus(err), err)
		return
	}
	raw, _ := json.Marshal(res)
	api.WriteJSON(w, http.StatusOK, applyResult{Result: raw})
}

// ApplyStatus maps an apply error to the status the forwarder acts on:
// 421 means "ask the leader", anything else is final.
func ApplyStatus(err error) int {
	if errors.Is(err, raftstore.ErrNotLeader) {
		return http.StatusMisdirectedRequest
	}
	return http.StatusConflict
}

// Apply applies cmd through the leader: here if this node leads, else
// forwarded. It retries while there is no leader, until ctx ends.
func (c *Cluster) Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error) {
	s, err := c.Store()
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
	// Sent again when an answer is lost, it must not apply twice: the
	// ID makes the leader's FSM answer a resend with the first result.
	b, err := raftstore.EncodeCommand(raftstore.Once{ID: transport.NewID(), Cmd: cmd})
	if err != nil {
		return nil, err
	}
	var out applyResult
	if err := c.forwardRaw(ctx, ApplyPath, b, &out); err != nil {
		return nil, err
	}
	return out.Result, nil
}

// Forward sends a JSON request to the leader, waiting for one to exist.
func (c *Cluster) Forward(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.forwardRaw(ctx, path, b, out)
}

// forwardRaw posts body to the leader's path, retrying while the leader
// is unknown or changes under us.
func (c *Cluster) forwardRaw(ctx context.Context, path string, body []byte, out any) error {
	s, err := c.Store()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = Retry(ctx, 100*time.Millisecond, func() (bool, error) {
		_, addr := s.Leader()
		if addr == "" {
			return false, raftstore.ErrNotLeader
		}
		err := c.Post(ctx, addr, path, body, out)
		return err == nil || !errors.Is(err, api.ErrRetry), err
	})
	if ctx.Err() != nil && (errors.Is(err, api.ErrRetry) || errors.Is(err, raftstore.ErrNotLeader)) {
		// Retry gives back an error it would retry only when ctx ended.
		return fmt.Errorf("no leader answered: %w", err)
	}
	return err
}

// Post sends one request to a peer. Failures worth trying again, there
// or at the next leader (unreachable, not the leader, not a member yet),
// wrap api.ErrRetry; others are the peer's error as api decodes it.
func (c *Cluster) Post(ctx context.Context, addr, path string, body []byte, out any) error {
	_, client, err := c.joined()
	if err != nil {
		return err
	}
	return postWith(ctx, client, addr, path, body, out)
}

// PostLong is Post without the peer client's timeout, for requests that
// last as long as what they do (a migration); ctx bounds them.
func (c *Cluster) PostLong(ctx context.Context, addr, path string, body []byte, out any) error {
	_, client, err := c.joined()
	if err != nil {
		return err
	}
	long := *client
	long.Timeout = 0
	return postWith(ctx, &long, addr, path, body, out)
}

func postWith(ctx context.Context, c *http.Client, addr, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", api.ErrRetry, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		if out == nil {
			return nil
		}
		return json.NewDecoder(io.LimitReader(resp.Body, MaxBody)).Decode(out)
	}
	e := api.DecodeError(resp)
	if resp.StatusCode == http.StatusMisdirectedRequest || resp.StatusCode == http.StatusServiceUnavailable {
		return fmt.Errorf("%w: %s: %s", api.ErrRetry, addr, e.Error)
	}
	if e.Error == "" {
		e.Error = resp.Status
	}
	return e.Err()
}
