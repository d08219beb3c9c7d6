package xds

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics keeps Istio's metric names where Istio has one, so existing dashboards and habits
// carry over; the type label uses Istio's short names (cds, eds, lds, rds, sds).
type metrics struct {
	connected   prometheus.Gauge
	pushes      *prometheus.CounterVec
	rejects     *prometheus.CounterVec
	convergence *prometheus.HistogramVec
	badNodes    prometheus.Counter
	// configs, stores and translations show how much proxies share: replicas of one workload
	// are one configuration, translated once per change, and configurations that differ only
	// in their listeners and RBAC rules share the stores of the other types.
	configs      prometheus.Gauge
	stores       prometheus.Gauge
	translations prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_xds",
			Help: "Number of proxies connected to this pilot over ADS.",
		}),
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes",
			Help: "xDS responses sent, by type.",
		}, []string{"type"}),
		rejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects",
			Help: "xDS responses proxies rejected (NACKed), by type.",
		}, []string{"type"}),
		convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pilot_proxy_convergence_time",
			Help:    "Seconds from a configuration change reaching pilot to the resulting xDS response being sent, by type.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"type"}),
		badNodes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_xds_rejected_streams_total",
			Help: "ADS streams refused because of a missing or malformed node ID.",
		}),
		configs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_xds_configs",
			Help: "Distinct proxy configurations served (translate.ConfigKey); proxies with one key share its translation and stores.",
		}),
		stores: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "skiff_xds_config_stores",
			Help: "Stores of translated resources, one per type and key: listeners per configuration, clusters, routes and secrets per translate.TrafficConfigKey.",
		}),
		translations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skiff_xds_translations_total",
			Help: "Translations of one resource type for one key (listeners, routes, clusters, secrets or extension configurations).",
		}),
	}
	reg.MustRegister(m.connected, m.pushes, m.rejects, m.convergence, m.badNodes, m.configs, m.stores, m.translations)
	return m
}

// shortType turns a type URL into Istio's short name: cds, eds, lds, rds, sds, ecds.
func shortType(typeURL string) string {
	switch {
	case strings.HasSuffix(typeURL, ".Cluster"):
		return "cds"
	case strings.HasSuffix(typeURL, ".ClusterLoadAssignment"):
		return "eds"
	case strings.HasSuffix(typeURL, ".Listener"):
		return "lds"
	case strings.HasSuffix(typeURL, ".RouteConfiguration"):
		return "rds"
	case strings.HasSuffix(typeURL, ".Secret"):
		return "sds"
	case strings.HasSuffix(typeURL, ".TypedExtensionConfig"):
		return "ecds"
	}
	return typeURL
}
