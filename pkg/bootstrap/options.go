package bootstrap

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/skiffmesh/skiff/pkg/model"
)

// Options says which proxy is joining and where pilot is. Only NodeID and XDSAddress are
// required; everything else has a default that suits a sidecar on a developer machine.
type Options struct {
	// NodeID is the Istio node ID, TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local with TYPE
	// sidecar or router. Pilot derives everything it knows about the proxy from it.
	NodeID string
	// XDSAddress is HOST:PORT of pilot's ADS gRPC port. HOST may be an IP or a DNS name.
	// Several pilot replicas are several addresses, comma-separated, all IPs or all DNS names:
	// the xds-grpc cluster gets an endpoint each, so when the replica Envoy is connected to
	// goes away, Envoy reconnects to another.
	XDSAddress string
	// Delta selects the incremental protocol (DELTA_GRPC) instead of state of the world (GRPC).
	Delta bool
	// Interception is "none" (the default) or "redirect", in any case, sent as node metadata
	// INTERCEPTION_MODE = NONE / REDIRECT, as Istio's agent does.
	Interception string
	// AdminAddress is IP:PORT of Envoy's admin interface; default 127.0.0.1:15000. Port 0 lets
	// the kernel pick one, which is handy when several Envoys share a host.
	AdminAddress string
	// Cluster is node.cluster. Default: the workload name "." namespace, as Istio derives its
	// service cluster; see defaultCluster.
	Cluster string
	// Labels are the workload's labels, sent as node metadata LABELS as Istio proxies do. Pilot
	// uses them to pick the Gateways, Sidecars and policies that apply to the proxy (selection,
	// not identity), in folder mode and only when the node ID names no workload: a Pod's or a
	// WorkloadEntry's own labels win.
	Labels map[string]string
	// XDSRootCert, when set, is the PEM trust bundle (`pilot ca root`) with which Envoy verifies
	// pilot: the xds-grpc cluster then uses TLS, for pilot's TLS xDS port (15012).
	XDSRootCert []byte
	// XDSServerName is the name sent as SNI and required in pilot's certificate when
	// XDSRootCert is set. Default: the host of XDSAddress if it is a DNS name, else
	// DefaultXDSServerName. It applies to XDSRootCertFile too.
	XDSServerName string
	// XDSRootCertFile is the alternative to XDSRootCert: the path of a PEM trust bundle that
	// Envoy reads itself when it starts (a DataSource filename), such as
	// /var/run/secrets/istio/root-cert.pem where an injected sidecar mounts the
	// istio-ca-root-cert ConfigMap. It also turns TLS on; set at most one of the two. The file is
	// only checked by Envoy, since it usually exists only where Envoy runs.
	XDSRootCertFile string

	// NodeIDFromCommandLine builds a bootstrap without node.id, for an Envoy started with
	// --service-node ID (which sets node.id). The sidecar injector needs this: the pod's IP is
	// part of the ID and is assigned after injection, so the ID is only known in the container,
	// where Kubernetes expands $(POD_IP) in the arguments. NodeID must then be empty and Cluster
	// set, as there is no pod name to derive it from.
	NodeIDFromCommandLine bool

	// ReadinessAddress, IP:PORT, adds a static listener that answers GET /healthz/ready and
	// GET /ready with Envoy's own readiness (the admin's /ready: 200 once the first listeners
	// and clusters from pilot are in place), the target of a Kubernetes readinessProbe, like
	// Istio's port 15021. Empty: no listener. It needs a fixed admin port (not 0). With it,
	// Envoy waits for pilot's first clusters and listeners however long it takes, as Istio's
	// sidecars do, instead of giving up after 15s: "ready" then means "configured by pilot"
	// (until then the probe fails: Envoy accepts on its listeners only once initialized).
	ReadinessAddress string
	// PrometheusAddress, IP:PORT, adds Istio's Prometheus listener (15090): /stats/prometheus
	// served from the admin interface, so metrics are scraped without exposing the admin port.
	// Empty: no listener. It needs a fixed admin port (not 0).
	PrometheusAddress string

	// UpstreamBind is the source IP of every connection Envoy makes upstream, the one to pilot
	// included (cluster_manager.upstream_bind_config). Pilot grants a workload certificate only
	// to a proxy that connects from its workload's address, and on one machine every Envoy
	// would otherwise connect from 127.0.0.1. Empty: no binding, the kernel picks;
	// UpstreamBindAuto (`pilot bootstrap`'s default): the node ID's IP when it is a loopback
	// address other than 127.0.0.1 and pilot's address is not an IP off loopback (see
	// autoUpstreamBind); else an IP.
	UpstreamBind string
}

const (
	// DefaultAdminAddress is Istio's admin port, bound to loopback only: the admin interface can
	// shut Envoy down and dump its configuration, so it must not be reachable from the network.
	DefaultAdminAddress = "127.0.0.1:15000"

	// DefaultXDSServerName is the name pilot's TLS certificate carries, istiod's in-cluster name.
	DefaultXDSServerName = "istiod.istio-system.svc"

	// DefaultReadinessAddress and DefaultPrometheusAddress are Istio's sidecar ports for the
	// readiness probe and for Prometheus scraping.
	DefaultReadinessAddress  = "0.0.0.0:15021"
	DefaultPrometheusAddress = "0.0.0.0:15090"

	// InterceptionNone and InterceptionRedirect are the accepted Options.Interception values.
	InterceptionNone     = "none"
	InterceptionRedirect = "redirect"

	// UpstreamBindAuto is the Options.UpstreamBind value that binds to the node ID's IP
	// where that is what a laptop mesh needs (autoUpstreamBind).
	UpstreamBindAuto = "auto"
)

// resolved is Options after validation and defaulting, in the shapes Build needs.
type resolved struct {
	nodeID       string
	cluster      string
	interception string // NONE or REDIRECT
	xdsHost      string // the first address's host: the default SNI name
	xdsIsIP      bool
	xdsEndpoints []hostPort // one per pilot replica
	adminIP      string
	adminPort    uint32
	delta        bool
	labels       map[string]string
	xdsRootCert  []byte // with xdsRootFile empty: plaintext
	xdsRootFile  string
	xdsSNI       string
	// readiness and prometheus are the optional static listeners' addresses; adminTarget is
	// where their routes reach the admin interface (loopback when admin binds a wildcard).
	readiness, prometheus *ipPort
	adminTarget           ipPort
	upstreamBind          string // source IP of upstream connections; empty: none
}

// hostPort is one of pilot's ADS addresses.
type hostPort struct {
	host string
	port uint32
}

// ipPort is a resolved bind address.
type ipPort struct {
	ip   string
	port uint32
}

// resolve validates o and fills in defaults. Every error starts with the Options field it is
// about, because these options usually come straight from command-line flags.
func (o Options) resolve() (*resolved, error) {
	r := &resolved{nodeID: o.NodeID, delta: o.Delta, labels: o.Labels}

	var name, namespace string
	var nodeIP netip.Addr
	if o.NodeIDFromCommandLine {
		if o.NodeID != "" {
			return nil, fmt.Errorf("NodeID %q is set with NodeIDFromCommandLine: leave it empty and pass it to Envoy as --service-node", o.NodeID)
		}
		if o.Cluster == "" {
			return nil, fmt.Errorf("Cluster is empty: with NodeIDFromCommandLine there is no pod name to derive it from")
		}
	} else {
		// The same parser pilot uses, so a bootstrap that builds carries an ID pilot accepts.
		proxy, err := model.ParseNodeID(o.NodeID)
		if err != nil {
			return nil, fmt.Errorf("NodeID: %w", err)
		}
		name, namespace, nodeIP = proxy.Name, proxy.Namespace, proxy.IP
	}

	switch strings.ToLower(o.Interception) {
	case "", InterceptionNone:
		r.interception = "NONE"
	case InterceptionRedirect:
		r.interception = "REDIRECT"
	default:
		return nil, fmt.Errorf("Interception %q: want %q or %q", o.Interception, InterceptionNone, InterceptionRedirect)
	}

	if o.XDSAddress == "" {
		return nil, fmt.Errorf("XDSAddress is empty: want HOST:PORT of pilot's gRPC port, e.g. 127.0.0.1:15010")
	}
	for i, addr := range strings.Split(o.XDSAddress, ",") {
		addr = strings.TrimSpace(addr)
		host, isIP, port, err := xdsEndpoint(addr)
		if err != nil {
			return nil, fmt.Errorf("XDSAddress %q: %w", addr, err)
		}
		if i == 0 {
			r.xdsHost, r.xdsIsIP = host, isIP
		} else if isIP != r.xdsIsIP {
			// One cluster, one discovery type: STATIC for IPs, STRICT_DNS for names.
			return nil, fmt.Errorf("XDSAddress %q: mixes IP addresses and DNS names; want all of one kind", o.XDSAddress)
		}
		r.xdsEndpoints = append(r.xdsEndpoints, hostPort{host, port})
	}

	admin := o.AdminAddress
	if admin == "" {
		admin = DefaultAdminAddress
	}
	host, port, err := splitHostPort(admin, 0)
	if err != nil {
		return nil, fmt.Errorf("AdminAddress %q: %w", admin, err)
	}
	// Envoy binds the admin address and never resolves it, so it must be an IP.
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("AdminAddress %q: host %q is not an IP address (Envoy binds it without resolving)", admin, host)
	}
	r.adminIP, r.adminPort = ip.String(), port
	r.adminTarget = ipPort{ip.String(), port}
	if ip.IsUnspecified() {
		// Admin on every address: the listeners reach it on loopback of the same family.
		r.adminTarget.ip = "127.0.0.1"
		if ip.Is6() {
			r.adminTarget.ip = "::1"
		}
	}
	for _, l := range []struct {
		field, addr string
		dst         **ipPort
	}{{"ReadinessAddress", o.ReadinessAddress, &r.readiness}, {"PrometheusAddress", o.PrometheusAddress, &r.prometheus}} {
		if l.addr == "" {
			continue
		}
		if port == 0 {
			return nil, fmt.Errorf("%s %q needs a fixed admin port: AdminAddress %q has port 0", l.field, l.addr, admin)
		}
		lip, err := bindAddress(l.addr)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", l.field, l.addr, err)
		}
		*l.dst = lip
	}
	if r.readiness != nil && r.prometheus != nil && *r.readiness == *r.prometheus {
		return nil, fmt.Errorf("ReadinessAddress and PrometheusAddress are both %q: want two addresses", o.ReadinessAddress)
	}

	if len(o.XDSRootCert) > 0 && o.XDSRootCertFile != "" {
		return nil, fmt.Errorf("XDSRootCert and XDSRootCertFile are both set: want one trust bundle")
	}
	if o.XDSRootCertFile != "" {
		// Envoy reads the file relative to its own working directory, so a relative path would
		// depend on where Envoy is started.
		if !strings.HasPrefix(o.XDSRootCertFile, "/") {
			return nil, fmt.Errorf("XDSRootCertFile %q: want an absolute path", o.XDSRootCertFile)
		}
		r.xdsRootFile = o.XDSRootCertFile
	}
	if len(o.XDSRootCert) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.XDSRootCert) {
			return nil, fmt.Errorf("XDSRootCert: no PEM certificate in it")
		}
		r.xdsRootCert = o.XDSRootCert
	}
	if r.xdsRootFile != "" || len(r.xdsRootCert) > 0 {
		r.xdsSNI = o.XDSServerName
		if r.xdsSNI == "" {
			r.xdsSNI = DefaultXDSServerName
			if !r.xdsIsIP {
				r.xdsSNI = r.xdsHost
			}
		}
	}

	switch o.UpstreamBind {
	case "":
	case UpstreamBindAuto:
		r.upstreamBind = autoUpstreamBind(nodeIP, r)
	default:
		// Envoy binds the address without resolving it.
		ip, err := netip.ParseAddr(o.UpstreamBind)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("UpstreamBind %q: want an IP address (Envoy binds it without resolving), %q, or empty for none", o.UpstreamBind, UpstreamBindAuto)
		}
		r.upstreamBind = ip.String()
	}

	r.cluster = o.Cluster
	if r.cluster == "" {
		r.cluster = defaultCluster(name, namespace)
	}
	return r, nil
}

// xdsEndpoint parses one of XDSAddress's HOST:PORT.
func xdsEndpoint(addr string) (host string, isIP bool, port uint32, err error) {
	host, port, err = splitHostPort(addr, 1)
	if err != nil {
		return "", false, 0, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			// Envoy's SocketAddress has no field for an IPv6 zone.
			return "", false, 0, errors.New("IPv6 zones are not supported")
		}
		return ip.String(), true, port, nil
	}
	if !dnsName.MatchString(host) {
		return "", false, 0, fmt.Errorf("host %q is neither an IP address nor a DNS name", host)
	}
	// A trailing dot is dropped: Envoy's resolver (c-ares) does not match "name." against
	// /etc/hosts, so "localhost." never resolves, while without the dot a DNS name is still
	// found, at worst after the search domains are tried.
	return strings.TrimSuffix(host, "."), false, port, nil
}

// autoUpstreamBind is UpstreamBindAuto's choice: the node ID's IP when it is in 127.0.0.0/8,
// where proxies on one machine stand for pods of their own (127.0.0.2, 127.0.0.3, ...) and
// pilot checks each one's identity by the address it connects from. Nothing otherwise: a pod's
// or a VM's Envoy connects from its own IP anyway, and 127.0.0.1 (or an unknown node IP, with
// NodeIDFromCommandLine) is what the kernel picks for loopback destinations already, while a
// bind would cut the proxy off from everything off the machine. Nor when pilot is at an IP
// off loopback, which a connection from a loopback address cannot reach.
func autoUpstreamBind(nodeIP netip.Addr, r *resolved) string {
	if !nodeIP.Is4() || !nodeIP.IsLoopback() || nodeIP == netip.AddrFrom4([4]byte{127, 0, 0, 1}) {
		return ""
	}
	for _, e := range r.xdsEndpoints {
		if xds, err := netip.ParseAddr(e.host); r.xdsIsIP && err == nil && !xds.IsLoopback() {
			return ""
		}
	}
	return nodeIP.String()
}

// bindAddress parses IP:PORT for a listener Envoy binds (so no name, and a port in 1..65535).
func bindAddress(addr string) (*ipPort, error) {
	host, port, err := splitHostPort(addr, 1)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("host %q is not an IP address (Envoy binds it without resolving)", host)
	}
	return &ipPort{ip.String(), port}, nil
}

// splitHostPort splits HOST:PORT (with [v6]:PORT for IPv6) and checks the port lies in
// minPort..65535.
func splitHostPort(addr string, minPort uint64) (string, uint32, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("want HOST:PORT: %w", err)
	}
	if host == "" {
		return "", 0, fmt.Errorf("host is empty: want HOST:PORT")
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port < minPort {
		return "", 0, fmt.Errorf("port %q: want a number in %d..65535", portStr, minPort)
	}
	return host, uint32(port), nil
}

// dnsName accepts what a resolver can look up: dot-separated labels of letters, digits and
// hyphens (underscores too, as they occur in SRV-style and some internal names), with an
// optional trailing dot. It exists to turn typos such as "http://pilot" into a clear error here
// instead of a DNS failure Envoy only logs.
var dnsName = regexp.MustCompile(`^([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$`)

// defaultCluster is the node.cluster a proxy gets when Options.Cluster is empty. Istio's agent
// sets it to the canonical service name "." namespace, so stats and the admin page group
// replicas of one workload together. Without the pod's labels we approximate the workload name
// from the pod name: a Deployment's generated suffixes are dropped (reviews-v1-7f99b6d4c5-x2lqp
// becomes reviews-v1); any other name is kept whole. Pilot does not read node.cluster, so a
// wrong guess only changes how the proxy labels itself.
func defaultCluster(name, namespace string) string {
	return model.WorkloadNameOf(name) + "." + namespace
}
