package skiffctl

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ProxyStatus is one proxy as pilot's /debug/syncz shows it (pkg/xds ProxyStatus).
type ProxyStatus struct {
	Proxy     string                 `json:"proxy"`
	Class     string                 `json:"class"`
	Config    string                 `json:"config,omitempty"`
	Protocol  string                 `json:"protocol"`
	Address   string                 `json:"address,omitempty"`
	Connected time.Time              `json:"connected"`
	Identity  string                 `json:"identity,omitempty"`
	Types     map[string]*TypeStatus `json:"types"`
	// Pilot is the pilot instance the status came from (not part of syncz).
	Pilot string `json:"pilot,omitempty"`
}

// TypeStatus is what was sent to a proxy for one type and what it made of it.
type TypeStatus struct {
	Sent      string    `json:"sent,omitempty"`
	SentNonce string    `json:"sent_nonce,omitempty"`
	SentAt    time.Time `json:"sent_at,omitzero"`
	Acked     string    `json:"acked,omitempty"`
	LastNack  *Nack     `json:"last_nack,omitempty"`
	// Rejected are the resources Envoy rejected that pilot holds at their last accepted
	// version (empty when pilot does not attribute NACKs to resources).
	Rejected []Rejection `json:"rejected,omitempty"`
}

// Nack is a proxy's last rejection of a type, with Envoy's error_detail.
type Nack struct {
	Version string    `json:"version"`
	Nonce   string    `json:"nonce"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// Rejection is one resource Envoy rejected.
type Rejection struct {
	Name        string `json:"name"`
	Error       string `json:"error"`
	HeldVersion string `json:"held_version,omitempty"`
}

// State is a proxy's sync state for one type, as proxy-status prints it.
type State string

// The states, as istioctl proxy-status names them (NACKED is Skiff's: istioctl folds it into
// STALE).
const (
	Synced  State = "SYNCED"
	NotSent State = "NOT SENT"
	Stale   State = "STALE"
	Nacked  State = "NACKED"
)

// StatusTypes are the xDS types proxy-status shows, with their column names.
var StatusTypes = []struct{ Key, Column string }{
	{"cds", "CDS"}, {"lds", "LDS"}, {"eds", "EDS"}, {"rds", "RDS"}, {"ecds", "ECDS"}, {"sds", "SDS"},
}

// State says where a type stands: nothing sent; the latest response NACKed, or resources of it
// rejected and held back; the latest response ACKed; or sent and not ACKed yet (STALE).
func (t *TypeStatus) State() State {
	switch {
	case t == nil || t.Sent == "" && t.SentNonce == "":
		return NotSent
	case len(t.Rejected) > 0:
		return Nacked
	case t.LastNack != nil && t.LastNack.Nonce == t.SentNonce:
		return Nacked
	case t.Acked == t.Sent:
		return Synced
	}
	return Stale
}

// Version is the latest version sent to the proxy, of whichever type was sent last.
func (s *ProxyStatus) Version() string {
	var latest *TypeStatus
	for _, t := range s.Types {
		if t.Sent != "" && (latest == nil || t.SentAt.After(latest.SentAt)) {
			latest = t
		}
	}
	if latest == nil {
		return ""
	}
	return latest.Sent
}

// StatusRow is one row of proxy-status's table.
type StatusRow struct {
	Name    string           `json:"name"`
	Config  string           `json:"config"`
	States  map[string]State `json:"states"`
	Pilot   string           `json:"pilot"`
	Version string           `json:"version"`
}

// Rows is the table of proxy-status, one row per proxy.
func Rows(statuses []ProxyStatus) []StatusRow {
	out := make([]StatusRow, 0, len(statuses))
	for i := range statuses {
		s := &statuses[i]
		row := StatusRow{Name: s.Proxy, Config: s.Config, States: map[string]State{}, Pilot: s.Pilot, Version: s.Version()}
		for _, t := range StatusTypes {
			row.States[t.Key] = s.Types[t.Key].State()
		}
		out = append(out, row)
	}
	slices.SortFunc(out, func(a, b StatusRow) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// PrintStatusTable prints proxy-status's table.
func PrintStatusTable(w io.Writer, rows []StatusRow) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprint(tw, "NAME\tCONFIG")
	for _, t := range StatusTypes {
		fmt.Fprint(tw, "\t", t.Column)
	}
	fmt.Fprintln(tw, "\tPILOT\tVERSION")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s", r.Name, dash(r.Config))
		for _, t := range StatusTypes {
			fmt.Fprint(tw, "\t", r.States[t.Key])
		}
		fmt.Fprintf(tw, "\t%s\t%s\n", r.Pilot, dash(r.Version))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// PrintStatusDetail prints, for one proxy, what differs between what pilot sent and what the
// proxy ACKed, type by type, with the NACK's error and the rejected resources.
func PrintStatusDetail(w io.Writer, s *ProxyStatus) {
	fmt.Fprintf(w, "Proxy:     %s\n", s.Proxy)
	fmt.Fprintf(w, "Pilot:     %s (%s stream from %s, connected %s)\n", s.Pilot, s.Protocol, dash(s.Address), s.Connected.Format(time.RFC3339))
	fmt.Fprintf(w, "Config:    %s\n", dash(s.Config))
	if s.Identity != "" {
		fmt.Fprintf(w, "Identity:  %s\n", s.Identity)
	}
	keys := slices.Sorted(maps.Keys(s.Types))
	order := func(k string) int {
		for i, t := range StatusTypes {
			if t.Key == k {
				return i
			}
		}
		return len(StatusTypes)
	}
	slices.SortStableFunc(keys, func(a, b string) int { return order(a) - order(b) })
	for _, k := range keys {
		t := s.Types[k]
		state := t.State()
		fmt.Fprintf(w, "\n%s: %s\n", strings.ToUpper(k), state)
		switch state {
		case NotSent:
			fmt.Fprintln(w, "  nothing sent: the proxy asked for nothing pilot has, or pilot refused it (SDS)")
		case Synced:
			fmt.Fprintf(w, "  sent and ACKed version %s (nonce %s, sent %s)\n", t.Sent, t.SentNonce, t.SentAt.Format(time.RFC3339))
		case Stale:
			fmt.Fprintf(w, "  sent version %s (nonce %s, %s ago), not ACKed yet\n", t.Sent, t.SentNonce, time.Since(t.SentAt).Round(time.Millisecond))
			fmt.Fprintf(w, "  the proxy holds version %s\n", dash(t.Acked))
		case Nacked:
			fmt.Fprintf(w, "  sent version %s (nonce %s); the proxy holds version %s\n", t.Sent, t.SentNonce, dash(t.Acked))
		}
		if t.LastNack != nil {
			fmt.Fprintf(w, "  last NACK: version %s (nonce %s) at %s:\n    %s\n", t.LastNack.Version, t.LastNack.Nonce,
				t.LastNack.At.Format(time.RFC3339), t.LastNack.Error)
		}
		for _, r := range t.Rejected {
			held := "not served"
			if r.HeldVersion != "" {
				held = "held at version " + r.HeldVersion
			}
			fmt.Fprintf(w, "  rejected %s (%s): %s\n", r.Name, held, r.Error)
		}
	}
}
