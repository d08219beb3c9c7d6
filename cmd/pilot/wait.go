package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/skiffmesh/skiff/pkg/xds"
)

// defaultWaitTimeout bounds /debug/wait when the request names no timeout.
const defaultWaitTimeout = 30 * time.Second

// waitView is /debug/wait's answer: the proxies' sync state, what the configuration folder
// still waits for, and how many configuration errors the loaded configuration has (a broken
// file is loaded as its last good version: in sync, but maybe not with what was written).
type waitView struct {
	xds.SyncReport
	ConfigReload string `json:"config_reload,omitempty"`
	ConfigErrors int    `json:"config_errors"`
}

// waitHandler serves /debug/wait[?timeout=DURATION]: it answers 200 once the configuration
// pilot has (including changes written to its folder before the request) is pushed and every
// connected proxy has answered it, ACK or NACK (listed under rejected); and 504 with what is
// still pending when the timeout passes. Docs and scripts call it after writing a file instead
// of sleeping. In Kubernetes mode it waits for what pilot has received from the API server.
func waitHandler(server *xds.Server, status *configStatus, settle func(context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		timeout := defaultWaitTimeout
		if v := r.URL.Query().Get("timeout"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				http.Error(w, "timeout: want a positive duration such as 10s", http.StatusBadRequest)
				return
			}
			timeout = d
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()

		var view waitView
		var err error
		if settle != nil {
			err = settle(ctx)
		}
		if err != nil {
			view.ConfigReload = err.Error()
			view.SyncReport = server.SyncState()
			view.Synced = false
		} else {
			view.SyncReport, err = server.WaitSynced(ctx)
		}
		view.ConfigErrors = len(status.view().Errors)
		code := http.StatusOK
		switch {
		case errors.Is(r.Context().Err(), context.Canceled):
			return // the client is gone
		case err != nil || !view.Synced:
			code = http.StatusGatewayTimeout
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(view)
	}
}
