package framework

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// Upstream is an HTTP server standing in for an application behind Envoy.
//
// By default it answers every request 200 with the upstream's name as the
// body and an "x-upstream: NAME" header, so a test sees which upstream Envoy
// picked; GET /headers answers with the request's headers as a JSON object
// (see EchoedHeaders). It serves HTTP/1.1 and cleartext HTTP/2 with prior
// knowledge, so clusters configured for either protocol work.
type Upstream struct {
	Name string
	IP   string
	Port int

	requests atomic.Int64
	server   *http.Server
}

// UpstreamOption changes how StartUpstream sets up an Upstream.
type UpstreamOption func(*upstreamConfig)

type upstreamConfig struct {
	handler http.Handler
}

// WithHandler serves requests with h instead of the default handler. The
// x-upstream header is still set before h runs, and requests still counted.
func WithHandler(h http.Handler) UpstreamOption {
	return func(c *upstreamConfig) { c.handler = h }
}

// StartUpstream starts an Upstream on ip (loopback) and a port the kernel
// picks, which is free by construction. It is closed when the test ends.
func StartUpstream(tb testing.TB, ip, name string, opts ...UpstreamOption) *Upstream {
	tb.Helper()
	mustLoopback(tb, ip)
	cfg := upstreamConfig{}
	for _, o := range opts {
		o(&cfg)
	}
	u := &Upstream{Name: name, IP: ip}
	if cfg.handler == nil {
		cfg.handler = http.HandlerFunc(u.defaultHandler)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		// 127.0.0.2 and up need no setup on Linux; other systems need an
		// alias on lo0.
		tb.Fatalf("framework: upstream %s: listening on %s: %v", name, ip, err)
	}
	u.Port = l.Addr().(*net.TCPAddr).Port

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	u.server = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.requests.Add(1)
			w.Header().Set("x-upstream", name)
			cfg.handler.ServeHTTP(w, r)
		}),
		Protocols: &protocols,
	}
	// Serve's error is reported from the cleanup: a goroutine must not use tb
	// once the test may have ended.
	served := make(chan error, 1)
	go func() { served <- u.server.Serve(l) }()
	tb.Cleanup(func() {
		u.server.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("framework: upstream %s stopped serving: %v", name, err)
		}
	})
	return u
}

// Address returns "ip:port".
func (u *Upstream) Address() string {
	return net.JoinHostPort(u.IP, strconv.Itoa(u.Port))
}

// Requests returns how many requests the upstream has received.
func (u *Upstream) Requests() int64 { return u.requests.Load() }

func (u *Upstream) defaultHandler(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/headers" {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(headersOf(r))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte(u.Name))
}

// headersOf flattens a request's headers to lower-case names (as Envoy
// writes them) with repeated values joined by ",". Go keeps the Host header
// out of r.Header; it is put back as "host".
func headersOf(r *http.Request) map[string]string {
	h := map[string]string{"host": r.Host}
	for k, v := range r.Header {
		h[strings.ToLower(k)] = strings.Join(v, ",")
	}
	return h
}

// EchoedHeaders decodes the body of an Upstream's /headers answer.
func EchoedHeaders(tb testing.TB, body string) map[string]string {
	tb.Helper()
	var h map[string]string
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		tb.Fatalf("framework: not an upstream /headers body (%v): %.200s", err, body)
	}
	return h
}
