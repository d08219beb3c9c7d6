package bootstrap

import (
	"crypto/x509"
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
	// uses them to pick the Gateways and Sidecars that apply to the proxy (selection, not
	// identity).
	Labels map[string]string
	// XDSRootCert, when set, is the PEM trust bundle (`pilot ca root`) with which Envoy verifies
	// pilot: the xds-grpc cluster then uses TLS, for pilot's TLS xDS port (15012).
	XDSRootCert []byte
	// XDSServerName is the name sent as SNI and required in pilot's certificate when
	// XDSRootCert is set. Default: the host of XDSAddress if it is a DNS name, else
	// DefaultXDSServerName.
	XDSServerName string
}

const (
	// DefaultAdminAddress is Istio's admin port, bound to loopback only: the admin interface can
	// shut Envoy down and dump its configuration, so it must not be reachable from the network.
	DefaultAdminAddress = "127.0.0.1:15000"

	// DefaultXDSServerName is the name pilot's TLS certificate carries, istiod's in-cluster name.
	DefaultXDSServerName = "istiod.istio-system.svc"

	// InterceptionNone and InterceptionRedirect are the accepted Options.Interception values.
	InterceptionNone     = "none"
	InterceptionRedirect = "redirect"
)

// resolved is Options after validation and defaulting, in the shapes Build needs.
type resolved struct {
	nodeID       string
	cluster      string
	interception string // NONE or REDIRECT
	xdsHost      string
	xdsIsIP      bool
	xdsPort      uint32
	adminIP      string
	adminPort    uint32
	delta        bool
	labels       map[string]string
	xdsRootCert  []byte // empty: plaintext
	xdsSNI       string
}

// resolve validates o and fills in defaults. Every error starts with the Options field it is
// about, because these options usually come straight from command-line flags.
func (o Options) resolve() (*resolved, error) {
	r := &resolved{nodeID: o.NodeID, delta: o.Delta, labels: o.Labels}

	// The same parser pilot uses, so a bootstrap that builds carries an ID pilot accepts.
	proxy, err := model.ParseNodeID(o.NodeID)
	if err != nil {
		return nil, fmt.Errorf("NodeID: %w", err)
	}
	name, namespace := proxy.Name, proxy.Namespace

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
	host, port, err := splitHostPort(o.XDSAddress, 1)
	if err != nil {
		return nil, fmt.Errorf("XDSAddress %q: %w", o.XDSAddress, err)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			// Envoy's SocketAddress has no field for an IPv6 zone.
			return nil, fmt.Errorf("XDSAddress %q: IPv6 zones are not supported", o.XDSAddress)
		}
		r.xdsHost, r.xdsIsIP = ip.String(), true
	} else if dnsName.MatchString(host) {
		// A trailing dot is dropped: Envoy's resolver (c-ares) does not match "name." against
		// /etc/hosts, so "localhost." never resolves, while without the dot a DNS name is still
		// found, at worst after the search domains are tried.
		r.xdsHost = strings.TrimSuffix(host, ".")
	} else {
		return nil, fmt.Errorf("XDSAddress %q: host %q is neither an IP address nor a DNS name", o.XDSAddress, host)
	}
	r.xdsPort = port

	admin := o.AdminAddress
	if admin == "" {
		admin = DefaultAdminAddress
	}
	host, port, err = splitHostPort(admin, 0)
	if err != nil {
		return nil, fmt.Errorf("AdminAddress %q: %w", admin, err)
	}
	// Envoy binds the admin address and never resolves it, so it must be an IP.
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return nil, fmt.Errorf("AdminAddress %q: host %q is not an IP address (Envoy binds it without resolving)", admin, host)
	}
	r.adminIP, r.adminPort = ip.String(), port

	if len(o.XDSRootCert) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.XDSRootCert) {
			return nil, fmt.Errorf("XDSRootCert: no PEM certificate in it")
		}
		r.xdsRootCert, r.xdsSNI = o.XDSRootCert, o.XDSServerName
		if r.xdsSNI == "" {
			r.xdsSNI = DefaultXDSServerName
			if !r.xdsIsIP {
				r.xdsSNI = r.xdsHost
			}
		}
	}

	r.cluster = o.Cluster
	if r.cluster == "" {
		r.cluster = defaultCluster(name, namespace)
	}
	return r, nil
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

// deploymentPod matches the names Kubernetes gives Deployment pods:
// NAME-<pod-template-hash>-<5 random>. Both suffixes are drawn from the alphabet of
// k8s.io/apimachinery's rand.SafeEncodeString, which has no vowels, so ordinary words in a
// workload name are not mistaken for them.
var deploymentPod = regexp.MustCompile(`^(.+)-[bcdfghjklmnpqrstvwxz2456789]{6,10}-[bcdfghjklmnpqrstvwxz2456789]{5}$`)

// defaultCluster is the node.cluster a proxy gets when Options.Cluster is empty. Istio's agent
// sets it to the canonical service name "." namespace, so stats and the admin page group
// replicas of one workload together. Without the pod's labels we approximate the workload name
// from the pod name: a Deployment's generated suffixes are dropped (reviews-v1-7f99b6d4c5-x2lqp
// becomes reviews-v1); any other name is kept whole. Pilot does not read node.cluster, so a
// wrong guess only changes how the proxy labels itself.
func defaultCluster(name, namespace string) string {
	if m := deploymentPod.FindStringSubmatch(name); m != nil {
		name = m[1]
	}
	return name + "." + namespace
}
