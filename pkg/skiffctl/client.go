// Package skiffctl is the client side of the skiffctl command: it reads pilot's monitoring
// port (/debug/syncz, /debug/config_dump, /debug/describe, /debug/wait, /debug/config_errors)
// and Envoy's admin interface (/config_dump), and turns what they answer into the tables,
// diffs and verdicts the commands print. Everything here is a reader: nothing changes pilot
// or Envoy.
package skiffctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/skiffmesh/skiff/pkg/translate"
)

// Pilot is one pilot's monitoring port.
type Pilot struct {
	// Address is host:port of the monitoring port (15014).
	Address string
	// Instance names the pilot in output: its address, or its Pod in Kubernetes mode.
	Instance string
	Client   *http.Client
}

// NewPilot is a client of the pilot whose monitoring port is address.
func NewPilot(address, instance string) *Pilot {
	if instance == "" {
		instance = address
	}
	return &Pilot{Address: address, Instance: instance, Client: &http.Client{}}
}

// get fetches path from the monitoring port. A status other than 200 is an error carrying
// pilot's own message, unless it is among accept.
func (p *Pilot) get(ctx context.Context, path string, query url.Values, accept ...int) ([]byte, int, error) {
	u := url.URL{Scheme: "http", Host: p.Address, Path: path, RawQuery: query.Encode()}
	return httpGet(ctx, p.Client, u.String(), "pilot "+p.Instance, accept...)
}

func httpGet(ctx context.Context, client *http.Client, u, who string, accept ...int) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", who, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", who, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("%s: reading %s: %w", who, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		for _, code := range accept {
			if code == resp.StatusCode {
				return body, resp.StatusCode, nil
			}
		}
		return nil, resp.StatusCode, fmt.Errorf("%s: GET %s: %s: %s", who, u, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, resp.StatusCode, nil
}

// Syncz is every proxy connected to the pilot, with its per-type status.
func (p *Pilot) Syncz(ctx context.Context) ([]ProxyStatus, error) {
	body, _, err := p.get(ctx, "/debug/syncz", nil)
	if err != nil {
		return nil, err
	}
	var out []ProxyStatus
	if err := json.Unmarshal(body, &out); err != nil {
		return nil, fmt.Errorf("pilot %s: reading /debug/syncz: %w", p.Instance, err)
	}
	for i := range out {
		out[i].Pilot = p.Instance
	}
	return out, nil
}

// ConfigDump is what pilot serves proxy (node ID or POD.NAMESPACE).
func (p *Pilot) ConfigDump(ctx context.Context, proxy string) (*Dump, error) {
	body, _, err := p.get(ctx, "/debug/config_dump", url.Values{"proxy": {proxy}})
	if err != nil {
		return nil, err
	}
	return ParseConfigDump(body)
}

// Describe is what applies to proxy, as pilot's current configuration says.
func (p *Pilot) Describe(ctx context.Context, proxy string) (*translate.Description, error) {
	body, _, err := p.get(ctx, "/debug/describe", url.Values{"proxy": {proxy}})
	if err != nil {
		return nil, err
	}
	var d translate.Description
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("pilot %s: reading /debug/describe: %w", p.Instance, err)
	}
	return &d, nil
}

// WaitRequest is what `skiffctl wait` asks pilot's /debug/wait.
type WaitRequest struct {
	Timeout time.Duration
	// For is KIND/NAMESPACE/NAME of the changed object; empty waits for everything pilot has.
	For             string
	ResourceVersion string
	Deleted         bool
}

// WaitResult is /debug/wait's answer.
type WaitResult struct {
	Synced   bool `json:"synced"`
	Proxies  int  `json:"proxies"`
	Pending  []WaitPending
	Rejected []WaitRejection
	// ConfigReload is why the folder's latest change is not loaded, if it is not.
	ConfigReload string `json:"config_reload,omitempty"`
	ConfigErrors int    `json:"config_errors"`
	Pilot        string `json:"pilot"`
}

// WaitPending is one thing pilot still waits for.
type WaitPending struct {
	Proxy      string `json:"proxy,omitempty"`
	Type       string `json:"type,omitempty"`
	WaitingFor string `json:"waiting_for"`
}

// WaitRejection is a proxy that rejected the latest push of a type.
type WaitRejection struct {
	Proxy   string `json:"proxy"`
	Type    string `json:"type"`
	Version string `json:"version"`
	Error   string `json:"error"`
}

// Wait asks the pilot to wait for the change; the answer says whether every proxy has it.
func (p *Pilot) Wait(ctx context.Context, req WaitRequest) (*WaitResult, error) {
	q := url.Values{"timeout": {req.Timeout.String()}}
	if req.For != "" {
		q.Set("for", req.For)
		if req.ResourceVersion != "" {
			q.Set("resourceVersion", req.ResourceVersion)
		}
		if req.Deleted {
			q.Set("deleted", "true")
		}
	}
	body, _, err := p.get(ctx, "/debug/wait", q, http.StatusGatewayTimeout)
	if err != nil {
		return nil, err
	}
	var res WaitResult
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("pilot %s: reading /debug/wait: %w", p.Instance, err)
	}
	res.Pilot = p.Instance
	return &res, nil
}

// ConfigErrors is pilot's /debug/config_errors: what it rejected and what it warns about.
func (p *Pilot) ConfigErrors(ctx context.Context) ([]byte, error) {
	body, _, err := p.get(ctx, "/debug/config_errors", nil)
	return body, err
}

// EnvoyConfigDump is what the Envoy whose admin interface is at address (host:port) holds,
// endpoints included.
func EnvoyConfigDump(ctx context.Context, address string) (*Dump, error) {
	body, _, err := httpGet(ctx, http.DefaultClient, "http://"+address+"/config_dump?include_eds", "Envoy admin "+address)
	if err != nil {
		return nil, err
	}
	return ParseConfigDump(body)
}
