package inject

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Paths the webhook server answers.
const (
	InjectPath = "/inject"
	ReadyPath  = "/ready"
)

// NewMux routes InjectPath to h and ReadyPath to ready (200 when it returns nil, else 503 with
// the error). It is all of the injector's HTTP surface, so a test can serve it in-process with
// httptest or Serve, on 127.0.0.1 with a certificate of its own.
func NewMux(h *Handler, ready func() error) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(InjectPath, h)
	mux.HandleFunc(ReadyPath, func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// Serve serves handler over TLS on lis, with the certificate getCert returns for each
// handshake (so a rotated certificate is picked up without a restart), until ctx ends; then it
// stops accepting and gives requests in flight a few seconds to finish.
func Serve(ctx context.Context, lis net.Listener, handler http.Handler, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		// The API server's webhook timeout is at most 30s; a review takes milliseconds.
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  90 * time.Second,
		TLSConfig:    &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert},
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(lis, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving the webhook on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting the webhook server down: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the webhook on %s: %w", lis.Addr(), err)
	}
	return nil
}
