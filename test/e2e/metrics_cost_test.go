package e2e

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkMetricsCost measures what Istio's standard metrics cost, in one run: two identical
// meshes, one whose pilot runs with --istio-metrics=false (no access logs in any listener),
// driven in turn by the same closed-loop HTTP load through the client sidecar. It reports, per
// mesh, the median requests per second and the pilot's CPU per 1,000 requests per second
// (process_cpu_seconds_total over the round). A measurement that loads the machine for about a
// minute: `make bench-metrics` runs it once.
func BenchmarkMetricsCost(b *testing.B) {
	const (
		rounds  = 5
		round   = 6 * time.Second
		workers = 4 // requests in flight: the VM has 2 cores for Envoys, pilot and the load
	)
	meshes := map[string]*metricsMesh{
		"off": startMetricsMesh(b, metricsPlace{net: "127.0.43", pilotArgs: []string{"--istio-metrics=false"}}),
		"on":  startMetricsMesh(b, metricsPlace{net: "127.0.44"}),
	}
	for _, m := range meshes {
		if err := m.traffic(); err != nil {
			b.Fatalf("warm-up: %v", err)
		}
	}
	for b.Loop() {
		measureMetricsCost(b, meshes, rounds, round, workers)
	}
}

// measureMetricsCost runs the rounds, alternating the meshes, and reports the medians.
func measureMetricsCost(b *testing.B, meshes map[string]*metricsMesh, rounds int, round time.Duration, workers int) {
	rates := map[string][]float64{}
	cpu := map[string][]float64{}
	for range rounds {
		for _, name := range []string{"off", "on"} {
			m := meshes[name]
			before := m.pilot.Metric(b, "process_cpu_seconds_total", nil)
			n := closedLoop(b, fmt.Sprintf("http://%s:%d/", m.place.clientIP(), m.httpPort), workers, round)
			used := m.pilot.Metric(b, "process_cpu_seconds_total", nil) - before
			rate := float64(n) / round.Seconds()
			rates[name] = append(rates[name], rate)
			// CPU seconds per second, per 1,000 requests per second: the share of a core
			// pilot needs for each 1,000 requests/s of mesh traffic.
			cpu[name] = append(cpu[name], used/round.Seconds()/rate*1000)
		}
	}
	for _, name := range []string{"off", "on"} {
		b.Logf("istio-metrics %-3s: median %.0f requests/s (rounds %.0f); pilot CPU per 1,000 requests/s: median %.3f cores (rounds %.3f)",
			name, medianOf(rates[name]), rates[name], medianOf(cpu[name]), cpu[name])
		b.ReportMetric(medianOf(rates[name]), "req/s-"+name)
	}
	b.ReportMetric(medianOf(cpu["on"]), "pilot-cores-per-1k-req/s")
	entries := meshes["on"].pilot.Metric(b, "skiff_telemetry_access_log_entries_total", nil)
	b.Logf("entries received by the metrics pilot: %.0f; throughput with metrics on / off: %.3f", entries, medianOf(rates["on"])/medianOf(rates["off"]))
}

// closedLoop sends GETs to url from workers goroutines on keep-alive connections for d and
// returns how many succeeded.
func closedLoop(t testing.TB, url string, workers int, d time.Duration) int64 {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	var ok, failed atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Host = "server.shop.svc.cluster.local"
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > ok.Load()/100 {
		t.Errorf("%s: %d requests failed, %d succeeded", url, f, ok.Load())
	}
	return ok.Load()
}

func medianOf(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}
