// Command echo runs the tiny HTTP upstreams of the examples/ mesh: one server per ADDRESS=NAME
// argument, each answering with its name and what it received, so a curl through Envoy shows
// where the request went.
//
//	go run ./examples/echo 127.0.0.1:8001=reviews-v1 127.0.0.1:8002=reviews-v2 127.0.0.1:8003=ratings
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: echo ADDRESS=NAME [ADDRESS=NAME ...]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	errs := make(chan error, len(os.Args))
	for _, arg := range os.Args[1:] {
		addr, name, ok := strings.Cut(arg, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "echo: %q: want ADDRESS=NAME\n", arg)
			os.Exit(2)
		}
		srv := &http.Server{Addr: addr, Handler: handler(name), ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- srv.ListenAndServe() }()
		go func() { <-ctx.Done(); _ = srv.Close() }()
		slog.Info("serving", "name", name, "address", addr)
	}
	select {
	case <-ctx.Done():
	case err := <-errs:
		slog.Error("server failed", "error", err)
		os.Exit(1)
	}
}

func handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", name)
		fmt.Fprintf(w, "%s: %s %s host=%s\n", name, r.Method, r.URL.Path, r.Host)
	})
}
