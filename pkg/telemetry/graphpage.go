package telemetry

import (
	_ "embed" // the page
	"encoding/json"
	"net/http"
)

// The page is a file of its own, HTML with a small script and no external resource: it works
// offline, from pilot's monitoring port alone.
//
//go:embed graph.html
var graphPage []byte

// RegisterGraph serves the mesh graph on mux: the page at GET /graph, and at GET /graph/data
// the Graph it draws, as JSON (?namespace=NS keeps the edges with an end in NS).
func (s *Service) RegisterGraph(mux *http.ServeMux) {
	mux.HandleFunc("GET /graph", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(graphPage)
	})
	mux.HandleFunc("GET /graph/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s.Graph(r.URL.Query().Get("namespace")))
	})
}
