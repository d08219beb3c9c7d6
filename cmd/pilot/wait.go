package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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

// waitHandler serves /debug/wait[?timeout=DURATION][&for=KIND/NAMESPACE/NAME
// [&resourceVersion=RV][&deleted=true]]: it answers 200 once the configuration
// pilot has (including changes written to its folder before the request) is pushed and every
// connected proxy has answered it, ACK or NACK (listed under rejected); and 504 with what is
// still pending when the timeout passes. Docs and scripts call it after writing a file instead
// of sleeping. In Kubernetes mode it waits for what pilot has received from the API server,
// including events still in the debounce.
// With for, it also waits for pilot's configuration to hold that object (at resourceVersion or
// later, when given; gone, with deleted): the change `skiffctl wait --for` names, which in
// Kubernetes mode pilot may not have received yet when the request arrives.
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
		cond, err := waitCondition(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()

		var view waitView
		if settle != nil {
			err = settle(ctx)
		}
		if err != nil {
			view.ConfigReload = err.Error()
			view.SyncReport = server.SyncState()
			view.Synced = false
		} else {
			view.SyncReport, err = server.WaitSyncedWith(ctx, cond)
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

// waitCondition reads /debug/wait's for, resourceVersion and deleted parameters; nil without
// for.
func waitCondition(r *http.Request) (xds.WaitCondition, error) {
	q := r.URL.Query()
	target := q.Get("for")
	if target == "" {
		if q.Get("resourceVersion") != "" || q.Get("deleted") != "" {
			return nil, fmt.Errorf("resourceVersion and deleted need for=KIND/NAMESPACE/NAME")
		}
		return nil, nil
	}
	parts := strings.Split(target, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return nil, fmt.Errorf("for=%q: want KIND/NAMESPACE/NAME, such as VirtualService/bookinfo/reviews", target)
	}
	deleted := false
	if v := q.Get("deleted"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("deleted=%q: want true or false", v)
		}
		deleted = b
	}
	cond, err := xds.ObjectCondition(parts[0], parts[1], parts[2], q.Get("resourceVersion"), deleted)
	if err != nil {
		return nil, fmt.Errorf("for=%s: %w", target, err)
	}
	return cond, nil
}
