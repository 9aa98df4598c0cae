package cluster

import (
	"net/http"
	"os"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

func (a *Agent) handleHealth(w http.ResponseWriter, _ *http.Request) {
	st := "joining"
	if a.isMember.Load() {
		st = "member"
	}
	api.WriteJSON(w, http.StatusOK, api.Health{Node: a.cfg.NodeName, Status: st, Pid: os.Getpid(),
		Uptime: time.Since(a.start).Round(time.Second).String()})
}

func (a *Agent) handleTokenCreate(w http.ResponseWriter, r *http.Request) {
	tok, err := transport.NewToken()
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	if _, err := a.peer.Apply(r.Context(), raftstore.TokenAdd{Hash: transport.TokenHash(tok), CreatedAt: time.Now()}); err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]string{"token": tok})
}
