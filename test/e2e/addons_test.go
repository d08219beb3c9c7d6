package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/test/framework"
)

// deploy/addons' Prometheus configuration, run by a real Prometheus: its kubernetes-pods job
// (Istio's addon's relabelling) finds pilot and the sidecars by their prometheus.io
// annotations and scrapes istio_* from pilot and envoy_* from the sidecars' 15090. The
// Prometheus of the tests is built without service discovery (hack/telemetry-tools), so the
// test gives the job, as static targets, the labels Kubernetes discovery gives a Pod
// (__meta_kubernetes_pod_*): the relabelling itself is the shipped one. It also scrapes
// every second instead of every 15, and leaves out the job that scrapes Prometheus itself.
func TestAddonPrometheusScrapesPilotAndSidecars(t *testing.T) {
	m := startMetricsMesh(t, metricsPlace{net: "127.0.48"})
	config := addonPrometheusConfig(t)

	pod := func(name, namespace, phase, address, path string, labels map[string]string) map[string]any {
		ip, port, err := net.SplitHostPort(address)
		if err != nil {
			t.Fatal(err)
		}
		meta := map[string]string{
			"__meta_kubernetes_pod_name": name, "__meta_kubernetes_namespace": namespace,
			"__meta_kubernetes_pod_phase": phase, "__meta_kubernetes_pod_ip": ip,
			"__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
			"__meta_kubernetes_pod_annotation_prometheus_io_port":   port,
		}
		if path != "" {
			meta["__meta_kubernetes_pod_annotation_prometheus_io_path"] = path
		}
		for k, v := range labels {
			meta["__meta_kubernetes_pod_label_"+k] = v
		}
		// Discovery's address is the Pod's IP and a declared port; the relabelling replaces
		// it with the annotated port.
		return map[string]any{"targets": []string{net.JoinHostPort(ip, "1")}, "labels": meta}
	}
	pending := pod("server-2", "shop", "Pending", m.serverStats, "/stats/prometheus", nil)
	unannotated := pod("app-1", "shop", "Running", m.clientStats, "", nil)
	delete(unannotated["labels"].(map[string]string), "__meta_kubernetes_pod_annotation_prometheus_io_scrape")
	targets := []any{
		pod("skiff-pilot-1", "istio-system", "Running", m.pilot.MonitoringAddress, "", map[string]string{"app": "skiff-pilot"}),
		pod("server-1", "shop", "Running", m.serverStats, "/stats/prometheus", map[string]string{"app": "server"}),
		pod("client-1", "shop", "Running", m.clientStats, "/stats/prometheus", map[string]string{"app": "client"}),
		pending, unannotated,
	}

	var jobs []any
	for _, j := range config["scrape_configs"].([]any) {
		job := j.(map[string]any)
		switch job["job_name"] {
		case "kubernetes-pods":
			if _, ok := job["kubernetes_sd_configs"]; !ok {
				t.Fatalf("deploy/addons: job kubernetes-pods discovers no Pods: %v", job)
			}
			delete(job, "kubernetes_sd_configs")
			job["static_configs"] = targets
			jobs = append(jobs, job)
		case "prometheus":
		default:
			t.Fatalf("deploy/addons: a job this test does not know: %v (add it here)", job["job_name"])
		}
	}
	config["scrape_configs"] = jobs
	global := config["global"].(map[string]any)
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = "1s", "1s", "1s"
	data, err := yaml.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	m.prom = framework.StartPrometheus(t, framework.PrometheusOptions{Config: data})

	// The annotated, running Pods are scraped; the Pending one and the one without
	// prometheus.io/scrape are not.
	framework.Eventually(t, func() error {
		samples, err := m.prom.TryQuery(`up{job="kubernetes-pods"} == 1`)
		if err != nil {
			return err
		}
		var pods []string
		for _, s := range samples {
			pods = append(pods, s.Labels["namespace"]+"/"+s.Labels["pod"])
		}
		sort.Strings(pods)
		if got, want := strings.Join(pods, " "), "istio-system/skiff-pilot-1 shop/client-1 shop/server-1"; got != want {
			targets, _ := m.prom.TryTargets()
			return fmt.Errorf("pods up: %q, want %q; targets %+v", got, want, targets)
		}
		return nil
	})
	// Istio's metrics come from pilot's Pod, Envoy's from the sidecars'.
	m.wantSeries(t, `sum(rate(istio_requests_total{reporter="destination"}[1m])) by (pod, source_workload, destination_workload, connection_security_policy) > 0`,
		[]string{"pod", "source_workload", "destination_workload", "connection_security_policy"},
		"pod=skiff-pilot-1,source_workload=client-1,destination_workload=server-1,connection_security_policy=mutual_tls")
	m.wantSeries(t, `sum(envoy_cluster_upstream_rq_total) by (pod, app) > 0`, []string{"pod", "app"},
		"pod=client-1,app=client", "pod=server-1,app=server")
}

// addonPrometheusConfig is prometheus.yml of deploy/addons/prometheus.yaml's ConfigMap.
func addonPrometheusConfig(t *testing.T) map[string]any {
	t.Helper()
	path := filepath.Join(framework.RepoRoot(t), "deploy", "addons", "prometheus.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if cm.Kind != "ConfigMap" || cm.Name != "prometheus" {
			continue
		}
		var config map[string]any
		if err := yaml.UnmarshalStrict([]byte(cm.Data["prometheus.yml"]), &config); err != nil {
			t.Fatalf("%s: ConfigMap prometheus, prometheus.yml: %v", path, err)
		}
		return config
	}
	t.Fatalf("%s: no ConfigMap prometheus", path)
	return nil
}
