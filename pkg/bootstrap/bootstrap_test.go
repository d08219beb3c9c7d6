package bootstrap

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

var update = flag.Bool("update", false, "rewrite testdata/*.yaml from the current output")

const (
	testNodeID = "sidecar~10.0.0.5~reviews-v1-7f99b6d4c5-x2lqp.default~default.svc.cluster.local"
	testXDS    = "istiod.istio-system.svc:15010"
)

func TestBuildOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string // substring; empty means Build must succeed
	}{
		{name: "minimal sidecar", opts: Options{NodeID: testNodeID, XDSAddress: "127.0.0.1:15010"}},
		{name: "router", opts: Options{NodeID: "router~10.0.0.9~gw-6b8f5d9c7d-q2w4z.istio-system~istio-system.svc.cluster.local", XDSAddress: "pilot:15010"}},
		{name: "ipv6 pilot", opts: Options{NodeID: testNodeID, XDSAddress: "[::1]:15010"}},
		{name: "ipv6 node and admin", opts: Options{NodeID: "sidecar~fd00::5~a.ns~ns.svc.cluster.local", XDSAddress: "pilot:15010", AdminAddress: "[::1]:15000"}},
		{name: "dns name with trailing dot", opts: Options{NodeID: testNodeID, XDSAddress: "pilot.skiff.svc.cluster.local.:15010"}},
		{name: "redirect", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, Interception: "redirect"}},
		{name: "interception is case-insensitive", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, Interception: "REDIRECT"}},
		{name: "explicit none", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, Interception: "none"}},
		{name: "admin port 0", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, AdminAddress: "127.0.0.1:0"}},
		{name: "delta", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, Delta: true}},

		{name: "empty node ID", opts: Options{XDSAddress: testXDS}, wantErr: "node ID is empty"},
		{name: "node ID too few parts", opts: Options{NodeID: "sidecar~10.0.0.5~a.ns", XDSAddress: testXDS}, wantErr: "want 4 parts"},
		{name: "node ID bad type", opts: Options{NodeID: "gateway~10.0.0.5~a.ns~ns.svc.cluster.local", XDSAddress: testXDS}, wantErr: `type "gateway"`},
		{name: "node ID bad IP", opts: Options{NodeID: "sidecar~10.0.0~a.ns~ns.svc.cluster.local", XDSAddress: testXDS}, wantErr: `IP "10.0.0"`},
		{name: "node ID without namespace", opts: Options{NodeID: "sidecar~10.0.0.5~a~ns.svc.cluster.local", XDSAddress: testXDS}, wantErr: "want POD.NAMESPACE"},
		{name: "node ID empty domain", opts: Options{NodeID: "sidecar~10.0.0.5~a.ns~", XDSAddress: testXDS}, wantErr: "DNS domain is empty"},
		{name: "empty XDS address", opts: Options{NodeID: testNodeID}, wantErr: "XDSAddress is empty"},
		{name: "XDS address without port", opts: Options{NodeID: testNodeID, XDSAddress: "pilot"}, wantErr: `XDSAddress "pilot": want HOST:PORT`},
		{name: "XDS address with URL scheme", opts: Options{NodeID: testNodeID, XDSAddress: "http://pilot:15010"}, wantErr: "XDSAddress"},
		{name: "XDS address without host", opts: Options{NodeID: testNodeID, XDSAddress: ":15010"}, wantErr: "host is empty"},
		{name: "XDS port 0", opts: Options{NodeID: testNodeID, XDSAddress: "pilot:0"}, wantErr: "want a number in 1..65535"},
		{name: "XDS port too big", opts: Options{NodeID: testNodeID, XDSAddress: "pilot:65536"}, wantErr: "want a number in 1..65535"},
		{name: "XDS port not a number", opts: Options{NodeID: testNodeID, XDSAddress: "pilot:grpc"}, wantErr: `port "grpc"`},
		{name: "XDS host not a name", opts: Options{NodeID: testNodeID, XDSAddress: "pi lot:15010"}, wantErr: "neither an IP address nor a DNS name"},
		{name: "XDS IPv6 zone", opts: Options{NodeID: testNodeID, XDSAddress: "[fe80::1%eth0]:15010"}, wantErr: "IPv6 zones"},
		{name: "XDS replicas mixing IPs and names", opts: Options{NodeID: testNodeID, XDSAddress: "10.0.0.1:15010,pilot-1:15010"}, wantErr: "mixes IP addresses and DNS names"},
		{name: "XDS replica without port", opts: Options{NodeID: testNodeID, XDSAddress: "10.0.0.1:15010,10.0.0.2"}, wantErr: `XDSAddress "10.0.0.2": want HOST:PORT`},
		{name: "bad interception", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, Interception: "tproxy"}, wantErr: `Interception "tproxy"`},
		{name: "admin host is a name", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, AdminAddress: "localhost:15000"}, wantErr: "AdminAddress"},
		{name: "admin without port", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, AdminAddress: "127.0.0.1"}, wantErr: "AdminAddress"},
		{name: "admin port too big", opts: Options{NodeID: testNodeID, XDSAddress: testXDS, AdminAddress: "127.0.0.1:99999"}, wantErr: "AdminAddress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(tt.opts)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Build succeeded, want error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Build error %q does not contain %q", err, tt.wantErr)
				}
				if _, yerr := YAML(tt.opts); yerr == nil {
					t.Fatalf("YAML succeeded where Build failed")
				}
				return
			}
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			if err := b.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if _, err := YAML(tt.opts); err != nil {
				t.Fatalf("YAML: %v", err)
			}
		})
	}
}

// TestBuildContent checks the choices that depend on the options, which the goldens show for
// one option set only.
func TestBuildContent(t *testing.T) {
	t.Run("IP host is STATIC", func(t *testing.T) {
		c := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: "[::1]:15010"}).GetStaticResources().GetClusters()[0]
		if got := c.GetType(); got != clusterv3.Cluster_STATIC {
			t.Errorf("type = %v, want STATIC", got)
		}
		if got := c.GetDnsLookupFamily(); got != clusterv3.Cluster_AUTO {
			t.Errorf("dns_lookup_family = %v, want it unset for an IP", got)
		}
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if sa.GetAddress() != "::1" || sa.GetPortValue() != 15010 {
			t.Errorf("endpoint = %s:%d, want ::1:15010", sa.GetAddress(), sa.GetPortValue())
		}
	})
	t.Run("DNS host is STRICT_DNS preferring IPv4", func(t *testing.T) {
		c := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: "pilot.:15010"}).GetStaticResources().GetClusters()[0]
		if got := c.GetType(); got != clusterv3.Cluster_STRICT_DNS {
			t.Errorf("type = %v, want STRICT_DNS", got)
		}
		if got := c.GetDnsLookupFamily(); got != clusterv3.Cluster_V4_PREFERRED {
			t.Errorf("dns_lookup_family = %v, want V4_PREFERRED", got)
		}
		if got := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress().GetAddress(); got != "pilot" {
			t.Errorf("endpoint host = %q, want the trailing dot trimmed", got)
		}
	})
	t.Run("replicas are one endpoint each", func(t *testing.T) {
		for _, tt := range []struct {
			addresses string
			want      []string
			typ       clusterv3.Cluster_DiscoveryType
		}{
			{"10.0.0.1:15010, 10.0.0.2:15011", []string{"10.0.0.1:15010", "10.0.0.2:15011"}, clusterv3.Cluster_STATIC},
			{"pilot-0.pilot:15010,pilot-1.pilot:15010", []string{"pilot-0.pilot:15010", "pilot-1.pilot:15010"}, clusterv3.Cluster_STRICT_DNS},
		} {
			c := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: tt.addresses}).GetStaticResources().GetClusters()[0]
			if got := c.GetType(); got != tt.typ {
				t.Errorf("%s: type = %v, want %v", tt.addresses, got, tt.typ)
			}
			var got []string
			for _, lle := range c.GetLoadAssignment().GetEndpoints() {
				for _, e := range lle.GetLbEndpoints() {
					sa := e.GetEndpoint().GetAddress().GetSocketAddress()
					got = append(got, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("%s: endpoints %v, want %v", tt.addresses, got, tt.want)
			}
		}
	})
	t.Run("HTTP/2 with keepalive", func(t *testing.T) {
		c := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: testXDS}).GetStaticResources().GetClusters()[0]
		var po httpv3.HttpProtocolOptions
		if err := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].UnmarshalTo(&po); err != nil {
			t.Fatalf("HttpProtocolOptions: %v", err)
		}
		ka := po.GetExplicitHttpConfig().GetHttp2ProtocolOptions().GetConnectionKeepalive()
		if ka.GetInterval().AsDuration() != keepaliveInterval || ka.GetTimeout().AsDuration() != keepaliveTimeout {
			t.Errorf("keepalive = %v/%v, want %v/%v", ka.GetInterval().AsDuration(), ka.GetTimeout().AsDuration(), keepaliveInterval, keepaliveTimeout)
		}
	})
	t.Run("ADS type follows Delta", func(t *testing.T) {
		for delta, want := range map[bool]corev3.ApiConfigSource_ApiType{false: corev3.ApiConfigSource_GRPC, true: corev3.ApiConfigSource_DELTA_GRPC} {
			b := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: testXDS, Delta: delta})
			if got := b.GetDynamicResources().GetAdsConfig().GetApiType(); got != want {
				t.Errorf("Delta=%v: api_type = %v, want %v", delta, got, want)
			}
		}
	})
	t.Run("interception metadata", func(t *testing.T) {
		for in, want := range map[string]string{"": "NONE", "none": "NONE", "redirect": "REDIRECT"} {
			b := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: testXDS, Interception: in})
			if got := b.GetNode().GetMetadata().GetFields()[interceptionModeKey].GetStringValue(); got != want {
				t.Errorf("Interception=%q: INTERCEPTION_MODE = %q, want %q", in, got, want)
			}
		}
	})
	t.Run("admin default", func(t *testing.T) {
		sa := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: testXDS}).GetAdmin().GetAddress().GetSocketAddress()
		if sa.GetAddress() != "127.0.0.1" || sa.GetPortValue() != 15000 {
			t.Errorf("admin = %s:%d, want 127.0.0.1:15000", sa.GetAddress(), sa.GetPortValue())
		}
	})
	t.Run("explicit cluster wins", func(t *testing.T) {
		if got := mustBuild(t, Options{NodeID: testNodeID, XDSAddress: testXDS, Cluster: "mine"}).GetNode().GetCluster(); got != "mine" {
			t.Errorf("cluster = %q, want mine", got)
		}
	})
}

// TestUpstreamBind: `pilot bootstrap`'s default (auto) binds a proxy's connections to its node
// ID's IP where pilot's identity check needs it, on a loopback address of its own; an explicit
// IP wins, and empty binds nothing.
func TestUpstreamBind(t *testing.T) {
	const loopNode = "sidecar~127.0.0.2~app-1.demo~demo.svc.cluster.local"
	for _, tc := range []struct {
		name string
		opts Options
		want string // the source address bound; empty: no cluster_manager at all
	}{
		{"auto on a loopback address", Options{NodeID: loopNode, XDSAddress: "127.0.0.1:15010", UpstreamBind: UpstreamBindAuto}, "127.0.0.2"},
		{"auto with pilot by name", Options{NodeID: loopNode, XDSAddress: "localhost:15010", UpstreamBind: UpstreamBindAuto}, "127.0.0.2"},
		{"auto on 127.0.0.1", Options{NodeID: "sidecar~127.0.0.1~app-1.demo~demo.svc.cluster.local", XDSAddress: "127.0.0.1:15010", UpstreamBind: UpstreamBindAuto}, ""},
		{"auto on a pod IP", Options{NodeID: testNodeID, XDSAddress: testXDS, UpstreamBind: UpstreamBindAuto}, ""},
		{"auto on IPv6 loopback", Options{NodeID: "sidecar~::1~app-1.demo~demo.svc.cluster.local", XDSAddress: "[::1]:15010", UpstreamBind: UpstreamBindAuto}, ""},
		{"auto with pilot off loopback", Options{NodeID: loopNode, XDSAddress: "10.96.0.10:15010", UpstreamBind: UpstreamBindAuto}, ""},
		{"auto without a node ID", Options{NodeIDFromCommandLine: true, Cluster: "app.demo", XDSAddress: testXDS, UpstreamBind: UpstreamBindAuto}, ""},
		{"explicit", Options{NodeID: testNodeID, XDSAddress: testXDS, UpstreamBind: "10.0.0.5"}, "10.0.0.5"},
		{"explicit IPv6", Options{NodeID: loopNode, XDSAddress: "[::1]:15010", UpstreamBind: "::1"}, "::1"},
		{"off", Options{NodeID: loopNode, XDSAddress: "127.0.0.1:15010"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := mustBuild(t, tc.opts)
			if tc.want == "" {
				if b.ClusterManager != nil {
					t.Errorf("cluster_manager = %v, want none", b.ClusterManager)
				}
				return
			}
			sa := b.GetClusterManager().GetUpstreamBindConfig().GetSourceAddress()
			if sa.GetAddress() != tc.want || sa.GetPortValue() != 0 {
				t.Errorf("upstream_bind_config.source_address = %s:%d, want %s:0", sa.GetAddress(), sa.GetPortValue(), tc.want)
			}
		})
	}
	for _, bad := range []string{"localhost", "127.0.0.2:0", "fe80::1%eth0"} {
		_, err := Build(Options{NodeID: loopNode, XDSAddress: testXDS, UpstreamBind: bad})
		if err == nil || !strings.Contains(err.Error(), "UpstreamBind") {
			t.Errorf("UpstreamBind %q: error %v, want one naming UpstreamBind", bad, err)
		}
	}
}

func TestDefaultCluster(t *testing.T) {
	for id, want := range map[string]string{
		"reviews-v1-7f99b6d4c5-x2lqp.default": "reviews-v1.default",             // Deployment pod
		"ratings-bc9d5f7d-5xkqv.bookinfo":     "ratings.bookinfo",               // shorter template hash
		"mysql-0.db":                          "mysql-0.db",                     // StatefulSet: kept whole
		"sleep.default":                       "sleep.default",                  // plain name
		"web-server-instance-alpha.prod":      "web-server-instance-alpha.prod", // vowels: not generated
		"vm.with.dots.ns":                     "vm.with.dots.ns",                // pod names may contain dots
	} {
		b := mustBuild(t, Options{NodeID: "sidecar~10.0.0.1~" + id + "~x.svc.cluster.local", XDSAddress: testXDS})
		if got := b.GetNode().GetCluster(); got != want {
			t.Errorf("ID %q: cluster = %q, want %q", id, got, want)
		}
	}
}

// TestGolden pins the exact YAML, so any change to the bootstrap shows up in review as a diff
// of what Envoy will read. Regenerate with `go test ./pkg/bootstrap -update`.
func TestGolden(t *testing.T) {
	for file, opts := range map[string]Options{
		"sidecar.yaml":       {NodeID: testNodeID, XDSAddress: testXDS},
		"sidecar-delta.yaml": {NodeID: testNodeID, XDSAddress: testXDS, Delta: true},
		"injected.yaml":      injected(),
	} {
		t.Run(file, func(t *testing.T) {
			got, err := YAML(opts)
			if err != nil {
				t.Fatalf("YAML: %v", err)
			}
			// protojson output is only stable within one binary; run twice to catch any
			// nondeterminism that survives the YAML conversion.
			again, _ := YAML(opts)
			if !bytes.Equal(got, again) {
				t.Fatalf("YAML is not deterministic:\n%s\n---\n%s", got, again)
			}
			path := filepath.Join("testdata", file)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (create it with `go test ./pkg/bootstrap -update`)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output; if the change is intended, run `go test ./pkg/bootstrap -update`\n--- got:\n%s\n--- want:\n%s", path, got, want)
			}
		})
	}
}

func mustBuild(t *testing.T, o Options) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := Build(o)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return b
}
