package cluster

import (
	"net/http"
	"os"
	"time"

	"ssi/cluster/api"
)

func (a *Agent) handleHealth(w http.ResponseWriter, _ *http.Request) {
	st := "joining"
	if a.isMember.Load() {
		st = "member"
	}
	api.WriteJSON(w, http.StatusOK, api.Health{Node: a.cfg.NodeName, Status: st, Pid: os.Getpid(),
		Uptime: time.Since(a.start).Round(time.Second).String()})
}
