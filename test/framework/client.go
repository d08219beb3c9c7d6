package framework

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// RequestTimeout bounds every request the harness makes: a request through
// Envoy that takes longer is a hang, not slowness, on loopback.
const RequestTimeout = 5 * time.Second

// Response is what Send returns; the body is read in full.
type Response struct {
	Status int
	Header http.Header
	Body   string
}

// Send makes one HTTP/1.1 request and returns the response, or an error if
// there was none; it never fails the test, so it can be used inside
// Eventually. host, if not empty, is the Host header (Envoy routes on it).
//
// Each request opens a new connection (keep-alives off): a reused connection
// would stay on the listener and filter chain it was accepted with, so a test
// checking a config change would see the old config until the connection
// closed. Redirects are returned, not followed; the request carries exactly
// the headers given (no Accept-Encoding added); proxy settings from the
// environment are ignored.
func Send(method, url, host string, headers map[string]string) (*Response, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := requestClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s (Host %q): reading the body: %w", method, url, host, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}, nil
}

// Do is Send failing the test if no response came back. A response with any
// status, 5xx included, is returned for the test to judge.
func Do(tb testing.TB, method, url, host string, headers map[string]string) (status int, header http.Header, body string) {
	tb.Helper()
	resp, err := Send(method, url, host, headers)
	if err != nil {
		tb.Fatalf("framework: %s %s (Host %q): %v", method, url, host, err)
	}
	return resp.Status, resp.Header, resp.Body
}

var requestClient = &http.Client{
	Timeout: RequestTimeout,
	Transport: &http.Transport{
		Proxy:              nil,
		DisableKeepAlives:  true,
		DisableCompression: true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// adminClient talks to the pilot's monitoring port and Envoy's admin port.
// Those listeners never change, so keep-alives are fine and save sockets
// while polling.
var adminClient = &http.Client{
	Timeout:   RequestTimeout,
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4},
}

// httpGet fetches http://address/path and returns its status and body.
func httpGet(address, path string) (int, []byte, error) {
	return adminRequest(http.MethodGet, address, path)
}

// adminRequest makes one request to an admin or monitoring endpoint.
func adminRequest(method, address, path string) (int, []byte, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := "http://" + address + path
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading the body: %w", method, url, err)
	}
	return resp.StatusCode, body, nil
}

// readyCheck returns a check for waitFor: GET path must answer 200.
func readyCheck(address, path string) func() error {
	return func() error {
		status, body, err := httpGet(address, path)
		if err != nil {
			return err
		}
		if status != http.StatusOK {
			return fmt.Errorf("GET %s: %d %s", path, status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}
