package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	typev1beta1 "istio.io/api/type/v1beta1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// This file validates the networking.istio.io kinds other than VirtualService.

func validateServiceEntry(v *validator, se *networking.ServiceEntry) {
	resolution := se.GetResolution()
	if len(se.GetHosts()) == 0 {
		v.add("spec.hosts", "at least one host is required")
	}
	hasEndpoints := len(se.GetEndpoints()) > 0
	for i, h := range se.GetHosts() {
		f := idx("spec.hosts", i)
		switch {
		case h == "*":
			v.add(f, `"*" alone is not allowed: a ServiceEntry cannot claim every host`)
		case resolution == networking.ServiceEntry_DYNAMIC_DNS && !strings.HasPrefix(h, "*."):
			v.add(f, "resolution DYNAMIC_DNS is only supported for wildcard hosts (\"*.example.com\"), not %q", h)
		case strings.HasPrefix(h, "*") && !hasEndpoints &&
			(resolution == networking.ServiceEntry_DNS || resolution == networking.ServiceEntry_DNS_ROUND_ROBIN):
			// With DNS resolution and no endpoints the hosts themselves are resolved, and a
			// wildcard cannot be.
			v.add(f, "wildcard host %q cannot be resolved: resolution %s without endpoints needs concrete hosts", h, resolution)
		default:
			v.addErr(f, checkWildcardHost(h))
		}
	}
	for i, a := range se.GetAddresses() {
		f := idx("spec.addresses", i)
		if err := checkIPOrCIDR(a); err != nil {
			v.addErr(f, err)
		} else if strings.Contains(a, "/") && resolution != networking.ServiceEntry_NONE && resolution != networking.ServiceEntry_STATIC {
			v.add(f, "CIDR addresses are only allowed with resolution NONE or STATIC")
		}
	}

	if len(se.GetPorts()) == 0 {
		v.add("spec.ports", "at least one port is required")
	}
	portNames := map[string]int{}
	portNumbers := map[uint32]int{}
	for i, p := range se.GetPorts() {
		f := idx("spec.ports", i)
		if p == nil {
			v.add(f, "must not be null")
			continue
		}
		if err := checkPort(p.GetNumber()); err != nil {
			v.addErr(f+".number", err)
		} else if first, dup := portNumbers[p.GetNumber()]; dup {
			v.add(f+".number", "duplicate port number %d (also spec.ports[%d])", p.GetNumber(), first)
		} else {
			portNumbers[p.GetNumber()] = i
		}
		if err := checkPortName(p.GetName()); err != nil {
			v.addErr(f+".name", err)
		} else if first, dup := portNames[p.GetName()]; dup {
			v.add(f+".name", "duplicate port name %q (also spec.ports[%d])", p.GetName(), first)
		} else {
			portNames[p.GetName()] = i
		}
		// An empty protocol is sniffed, as in istiod.
		if p.GetProtocol() != "" {
			v.addErr(f+".protocol", checkProtocol(p.GetProtocol()))
		}
		if p.GetTargetPort() != 0 {
			v.addErr(f+".targetPort", checkPort(p.GetTargetPort()))
		}
	}

	if sel := se.GetWorkloadSelector(); sel != nil {
		if hasEndpoints {
			v.add("spec.workloadSelector", "cannot be set together with spec.endpoints")
		}
		validateLabels(v, "spec.workloadSelector.labels", sel.GetLabels())
	}
	switch resolution {
	case networking.ServiceEntry_NONE:
		if hasEndpoints {
			v.add("spec.endpoints", "must not be set with resolution NONE")
		}
	case networking.ServiceEntry_STATIC:
		if !hasEndpoints && se.GetWorkloadSelector() == nil {
			v.add("spec.endpoints", "resolution STATIC requires endpoints or a workloadSelector")
		}
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.GetEndpoints()) > 1 {
			v.add("spec.endpoints", "resolution DNS_ROUND_ROBIN allows at most one endpoint")
		}
	}
	for i, ep := range se.GetEndpoints() {
		f := idx("spec.endpoints", i)
		if ep == nil {
			v.add(f, "must not be null")
			continue
		}
		mode := addressAny
		switch resolution {
		case networking.ServiceEntry_STATIC:
			mode = addressIP
		case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN, networking.ServiceEntry_DYNAMIC_DNS:
			mode = addressHost
		}
		validateWorkload(v, f, ep, mode)
		for _, name := range sortedKeys(ep.GetPorts()) {
			if _, ok := portNames[name]; !ok {
				v.add(key(f+".ports", name), "no port named %q in spec.ports", name)
			}
		}
	}
	validateExportTo(v, "spec.exportTo", se.GetExportTo())
}

// addressMode says which endpoint addresses are acceptable.
type addressMode int

const (
	addressAny  addressMode = iota // IP, hostname or unix:// socket (WorkloadEntry)
	addressIP                      // IP or unix:// socket (resolution STATIC)
	addressHost                    // IP, hostname or unix:// socket, resolved by DNS
)

func validateWorkloadEntry(v *validator, path string, we *networking.WorkloadEntry) {
	validateWorkload(v, path, we, addressAny)
}

// validateWorkload checks a WorkloadEntry spec, or a ServiceEntry endpoint (the same message).
func validateWorkload(v *validator, path string, we *networking.WorkloadEntry, mode addressMode) {
	addr := we.GetAddress()
	uds := strings.HasPrefix(addr, "unix://")
	switch {
	case addr == "":
		v.add(path+".address", "required")
	case uds:
		v.addErr(path+".address", checkUDS(addr))
		if len(we.GetPorts()) > 0 {
			v.add(path+".ports", "not allowed with a unix:// address")
		}
	case mode == addressIP:
		if _, err := netip.ParseAddr(addr); err != nil {
			v.add(path+".address", "%q is not an IP address: with resolution STATIC, addresses must be IPs or unix:// sockets", addr)
		}
	default:
		if _, err := netip.ParseAddr(addr); err != nil {
			if herr := checkHostname(addr); herr != nil {
				v.add(path+".address", "%q is neither an IP address, a hostname nor a unix:// socket", addr)
			}
		}
	}
	for _, name := range sortedKeys(we.GetPorts()) {
		f := key(path+".ports", name)
		if len(name) > 62 || !dnsLabel.MatchString(name) {
			v.add(f, "invalid port name %q: must be a DNS label", name)
		}
		v.addErr(f, checkPort(we.GetPorts()[name]))
	}
	validateLabels(v, path+".labels", we.GetLabels())
	if sa := we.GetServiceAccount(); sa != "" {
		if msgs := validation.IsDNS1123Subdomain(sa); len(msgs) > 0 {
			v.add(path+".serviceAccount", "invalid service account %q: %s", sa, strings.Join(msgs, "; "))
		}
	}
}

// checkUDS checks a unix:// address: an absolute path or an abstract socket (@name).
func checkUDS(addr string) error {
	p := strings.TrimPrefix(addr, "unix://")
	switch {
	case p == "" || (p[0] != '/' && p[0] != '@'):
		return fmt.Errorf("%q: a unix socket must be an absolute path or an abstract socket (unix://@name)", addr)
	case strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q: a unix socket cannot be a directory", addr)
	}
	return nil
}

func validateDestinationRule(v *validator, dr *networking.DestinationRule) {
	if dr.GetHost() == "" {
		v.add("spec.host", "required")
	} else {
		v.addErr("spec.host", checkWildcardHost(dr.GetHost()))
	}
	if tp := dr.GetTrafficPolicy(); tp != nil {
		validateTrafficPolicy(v, "spec.trafficPolicy", tp)
	}
	seen := map[string]int{}
	for i, s := range dr.GetSubsets() {
		f := idx("spec.subsets", i)
		if s == nil {
			v.add(f, "must not be null")
			continue
		}
		// A subset without labels is allowed: it selects every endpoint of the host, which is
		// how a subset only changes the traffic policy.
		switch name := s.GetName(); {
		case name == "":
			v.add(f+".name", "required")
		case len(name) > 63 || !dnsLabel.MatchString(name):
			v.add(f+".name", "invalid subset name %q: must be a DNS label", name)
		default:
			if first, dup := seen[name]; dup {
				v.add(f+".name", "duplicate subset name %q (also spec.subsets[%d])", name, first)
			} else {
				seen[name] = i
			}
		}
		validateLabels(v, f+".labels", s.GetLabels())
		if tp := s.GetTrafficPolicy(); tp != nil {
			validateTrafficPolicy(v, f+".trafficPolicy", tp)
		}
	}
	validateExportTo(v, "spec.exportTo", dr.GetExportTo())
	validateSelector(v, "spec.workloadSelector", dr.GetWorkloadSelector())
}

// validateSelector checks a security-style selector (matchLabels).
func validateSelector(v *validator, path string, sel *typev1beta1.WorkloadSelector) {
	if sel != nil {
		validateLabels(v, path+".matchLabels", sel.GetMatchLabels())
	}
}

func validateTrafficPolicy(v *validator, path string, tp *networking.TrafficPolicy) {
	validateLoadBalancer(v, path+".loadBalancer", tp.GetLoadBalancer())
	validateConnectionPool(v, path+".connectionPool", tp.GetConnectionPool())
	validateOutlierDetection(v, path+".outlierDetection", tp.GetOutlierDetection())
	validateClientTLS(v, path+".tls", tp.GetTls())
	ports := map[uint32]int{}
	for i, pl := range tp.GetPortLevelSettings() {
		f := idx(path+".portLevelSettings", i)
		if pl == nil {
			v.add(f, "must not be null")
			continue
		}
		if pl.GetPort() == nil {
			v.add(f+".port", "required")
		} else if err := checkPort(pl.GetPort().GetNumber()); err != nil {
			v.addErr(f+".port.number", err)
		} else if first, dup := ports[pl.GetPort().GetNumber()]; dup {
			v.add(f+".port.number", "duplicate port %d (also %s)", pl.GetPort().GetNumber(), idx(path+".portLevelSettings", first))
		} else {
			ports[pl.GetPort().GetNumber()] = i
		}
		validateLoadBalancer(v, f+".loadBalancer", pl.GetLoadBalancer())
		validateConnectionPool(v, f+".connectionPool", pl.GetConnectionPool())
		validateOutlierDetection(v, f+".outlierDetection", pl.GetOutlierDetection())
		validateClientTLS(v, f+".tls", pl.GetTls())
	}
	if t := tp.GetTunnel(); t != nil {
		f := path + ".tunnel"
		if p := t.GetProtocol(); p != "" && !strings.EqualFold(p, "CONNECT") && !strings.EqualFold(p, "POST") {
			v.add(f+".protocol", "must be CONNECT or POST, not %q", p)
		}
		if t.GetTargetHost() == "" {
			v.add(f+".targetHost", "required")
		}
		v.addErr(f+".targetPort", checkPort(t.GetTargetPort()))
	}
}

func validateLoadBalancer(v *validator, path string, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		if c := ch.GetHttpCookie(); c != nil && c.GetName() == "" {
			v.add(path+".consistentHash.httpCookie.name", "required")
		}
		if _, ok := ch.GetHashKey().(*networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName); ok && ch.GetHttpHeaderName() == "" {
			v.add(path+".consistentHash.httpHeaderName", "must not be empty")
		}
	}
	if l := lb.GetLocalityLbSetting(); l != nil {
		f := path + ".localityLbSetting"
		if len(l.GetDistribute()) > 0 && len(l.GetFailover()) > 0 {
			v.add(f, "distribute and failover cannot both be set")
		}
		for i, d := range l.GetDistribute() {
			var total uint64
			for _, w := range d.GetTo() {
				total += uint64(w)
			}
			if total != 100 {
				v.add(idx(f+".distribute", i)+".to", "weights must add up to 100, not %d", total)
			}
		}
	}
}

func validateConnectionPool(v *validator, path string, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if tcp := cp.GetTcp(); tcp != nil {
		nonNegative(v, path+".tcp.maxConnections", tcp.GetMaxConnections())
		positive(v, path+".tcp.connectTimeout", tcp.GetConnectTimeout())
		positive(v, path+".tcp.idleTimeout", tcp.GetIdleTimeout())
	}
	if h := cp.GetHttp(); h != nil {
		nonNegative(v, path+".http.http1MaxPendingRequests", h.GetHttp1MaxPendingRequests())
		nonNegative(v, path+".http.http2MaxRequests", h.GetHttp2MaxRequests())
		nonNegative(v, path+".http.maxRequestsPerConnection", h.GetMaxRequestsPerConnection())
		nonNegative(v, path+".http.maxRetries", h.GetMaxRetries())
		nonNegative(v, path+".http.maxConcurrentStreams", h.GetMaxConcurrentStreams())
	}
}

func validateOutlierDetection(v *validator, path string, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	nonNegative(v, path+".consecutiveErrors", od.GetConsecutiveErrors())
	positive(v, path+".interval", od.GetInterval())
	positive(v, path+".baseEjectionTime", od.GetBaseEjectionTime())
	percent(v, path+".maxEjectionPercent", float64(od.GetMaxEjectionPercent()))
	percent(v, path+".minHealthPercent", float64(od.GetMinHealthPercent()))
}

func validateClientTLS(v *validator, path string, tls *networking.ClientTLSSettings) {
	if tls == nil {
		return
	}
	switch tls.GetMode() {
	case networking.ClientTLSSettings_MUTUAL:
		// A credentialName holds the key pair; otherwise both files are needed.
		if tls.GetCredentialName() == "" {
			if tls.GetClientCertificate() == "" {
				v.add(path+".clientCertificate", "required with mode MUTUAL unless credentialName is set")
			}
			if tls.GetPrivateKey() == "" {
				v.add(path+".privateKey", "required with mode MUTUAL unless credentialName is set")
			}
		}
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		// Istio provides the certificates; ones set here would be silently ignored.
		if tls.GetClientCertificate() != "" || tls.GetPrivateKey() != "" || tls.GetCaCertificates() != "" || tls.GetCredentialName() != "" {
			v.add(path, "mode ISTIO_MUTUAL uses Istio's certificates: clientCertificate, privateKey, caCertificates and credentialName must not be set")
		}
	}
}

func validateGateway(v *validator, gw *networking.Gateway) {
	if len(gw.GetServers()) == 0 {
		v.add("spec.servers", "at least one server is required")
	}
	portNames := map[string]int{}
	for i, s := range gw.GetServers() {
		f := idx("spec.servers", i)
		if s == nil {
			v.add(f, "must not be null")
			continue
		}
		p := s.GetPort()
		if p == nil {
			v.add(f+".port", "required")
		} else {
			v.addErr(f+".port.number", checkPort(p.GetNumber()))
			if p.GetProtocol() == "" {
				v.add(f+".port.protocol", "required")
			} else {
				v.addErr(f+".port.protocol", checkProtocol(p.GetProtocol()))
			}
			if err := checkPortName(p.GetName()); err != nil {
				v.addErr(f+".port.name", err)
			} else if first, dup := portNames[p.GetName()]; dup {
				v.add(f+".port.name", "duplicate port name %q (also spec.servers[%d]): port names must be unique across servers", p.GetName(), first)
			} else {
				portNames[p.GetName()] = i
			}
			if p.GetTargetPort() != 0 {
				v.addErr(f+".port.targetPort", checkPort(p.GetTargetPort()))
			}
		}
		if len(s.GetHosts()) == 0 {
			v.add(f+".hosts", "at least one host is required")
		}
		for j, h := range s.GetHosts() {
			v.addErr(idx(f+".hosts", j), checkNamespacedHost(h, false))
		}
		if b := s.GetBind(); b != "" {
			v.addErr(f+".bind", checkBind(b))
		}
		validateServerTLS(v, f, p, s.GetTls())
	}
	validateLabels(v, "spec.selector", gw.GetSelector())
}

func validateServerTLS(v *validator, server string, port *networking.Port, tls *networking.ServerTLSSettings) {
	proto := strings.ToUpper(port.GetProtocol())
	if tls == nil {
		if proto == "HTTPS" || proto == "TLS" {
			v.add(server+".tls", "required for protocol %s", proto)
		}
		return
	}
	f := server + ".tls"
	switch tls.GetMode() {
	case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
		hasCredential := tls.GetCredentialName() != "" || len(tls.GetCredentialNames()) > 0 || len(tls.GetTlsCertificates()) > 0
		if !hasCredential {
			if tls.GetServerCertificate() == "" {
				v.add(f+".serverCertificate", "required with mode %s unless credentialName is set", tls.GetMode())
			}
			if tls.GetPrivateKey() == "" {
				v.add(f+".privateKey", "required with mode %s unless credentialName is set", tls.GetMode())
			}
			if tls.GetMode() != networking.ServerTLSSettings_SIMPLE && tls.GetCaCertificates() == "" {
				v.add(f+".caCertificates", "required with mode %s unless credentialName is set", tls.GetMode())
			}
		}
	case networking.ServerTLSSettings_ISTIO_MUTUAL:
		// As istiod's validation: the gateway presents its own workload certificate and
		// verifies clients against the mesh root, so certificates named here would be ignored.
		for _, set := range []struct {
			field string
			set   bool
		}{
			{"serverCertificate", tls.GetServerCertificate() != ""},
			{"privateKey", tls.GetPrivateKey() != ""},
			{"caCertificates", tls.GetCaCertificates() != ""},
			{"tlsCertificates", len(tls.GetTlsCertificates()) > 0},
			{"credentialName", tls.GetCredentialName() != ""},
			{"credentialNames", len(tls.GetCredentialNames()) > 0},
			{"caCertCredentialName", tls.GetCaCertCredentialName() != ""},
		} {
			if set.set {
				v.add(f+"."+set.field, "must not be set with mode ISTIO_MUTUAL, which uses the gateway's workload certificate and the mesh root")
			}
		}
	}
}

// checkNamespacedHost checks a "namespace/host" as Gateway servers (namespace optional) and
// Sidecar egress listeners (namespace required) write them. The namespace may be "*" (any),
// "." (the object's own) or, for a Sidecar, "~" (none).
func checkNamespacedHost(h string, sidecar bool) error {
	ns, host, ok := strings.Cut(h, "/")
	if !ok {
		if sidecar {
			return fmt.Errorf("%q must be of the form namespace/host (\"*/%s\" for any namespace)", h, h)
		}
		host, ns = h, "*"
	}
	switch {
	case ns == "*" || ns == ".":
	case ns == "~" && sidecar:
	case len(validation.IsDNS1123Label(ns)) > 0:
		return fmt.Errorf("%q: invalid namespace %q", h, ns)
	}
	if err := checkWildcardHost(host); err != nil {
		return fmt.Errorf("%q: %w", h, err)
	}
	return nil
}

// checkBind checks a listener bind address: an IP or a unix:// socket.
func checkBind(b string) error {
	if strings.HasPrefix(b, "unix://") {
		return checkUDS(b)
	}
	if _, err := netip.ParseAddr(b); err != nil {
		return fmt.Errorf("%q is neither an IP address nor a unix:// socket", b)
	}
	return nil
}

func validateSidecar(v *validator, sc *networking.Sidecar) {
	if sel := sc.GetWorkloadSelector(); sel != nil {
		validateLabels(v, "spec.workloadSelector.labels", sel.GetLabels())
	}
	ingressPorts := map[uint32]int{}
	for i, in := range sc.GetIngress() {
		f := idx("spec.ingress", i)
		if in == nil {
			v.add(f, "must not be null")
			continue
		}
		p := in.GetPort()
		if p == nil {
			v.add(f+".port", "required")
		} else {
			validateSidecarPort(v, f+".port", p, true)
			if first, dup := ingressPorts[p.GetNumber()]; dup {
				v.add(f+".port.number", "duplicate port %d (also spec.ingress[%d])", p.GetNumber(), first)
			} else {
				ingressPorts[p.GetNumber()] = i
			}
		}
		if b := in.GetBind(); b != "" {
			v.addErr(f+".bind", checkBind(b))
		}
		if ep := in.GetDefaultEndpoint(); ep != "" {
			v.addErr(f+".defaultEndpoint", checkDefaultEndpoint(ep))
		}
	}
	egressPorts := map[uint32]int{}
	catchAll := -1
	for i, eg := range sc.GetEgress() {
		f := idx("spec.egress", i)
		if eg == nil {
			v.add(f, "must not be null")
			continue
		}
		if p := eg.GetPort(); p == nil {
			if catchAll >= 0 {
				v.add(f+".port", "only one egress listener may omit the port (also spec.egress[%d])", catchAll)
			}
			catchAll = i
		} else {
			validateSidecarPort(v, f+".port", p, false)
			if first, dup := egressPorts[p.GetNumber()]; dup {
				v.add(f+".port.number", "duplicate port %d (also spec.egress[%d])", p.GetNumber(), first)
			} else {
				egressPorts[p.GetNumber()] = i
			}
		}
		if len(eg.GetHosts()) == 0 {
			v.add(f+".hosts", "at least one host is required")
		}
		for j, h := range eg.GetHosts() {
			v.addErr(idx(f+".hosts", j), checkNamespacedHost(h, true))
		}
		if b := eg.GetBind(); b != "" {
			v.addErr(f+".bind", checkBind(b))
		}
	}
	if otp := sc.GetOutboundTrafficPolicy(); otp != nil && otp.GetEgressProxy() != nil {
		validateDestination(v, "spec.outboundTrafficPolicy.egressProxy", otp.GetEgressProxy())
	}
}

func validateSidecarPort(v *validator, path string, p *networking.SidecarPort, ingress bool) {
	v.addErr(path+".number", checkPort(p.GetNumber()))
	switch {
	case p.GetProtocol() != "":
		v.addErr(path+".protocol", checkProtocol(p.GetProtocol()))
	case ingress:
		v.add(path+".protocol", "required")
	}
	if p.GetName() != "" {
		v.addErr(path+".name", checkPortName(p.GetName()))
	}
}

// checkDefaultEndpoint checks where an ingress listener forwards to: a loopback or unspecified
// IP with a port (the application in the same pod or VM), or a unix socket.
func checkDefaultEndpoint(ep string) error {
	if strings.HasPrefix(ep, "unix://") {
		return checkUDS(ep)
	}
	ap, err := netip.ParseAddrPort(ep)
	if err != nil {
		return fmt.Errorf("%q must be IP:PORT (such as 127.0.0.1:8080) or unix:///path", ep)
	}
	if !ap.Addr().IsLoopback() && !ap.Addr().IsUnspecified() {
		return fmt.Errorf("%q: the IP must be a loopback (127.0.0.1, [::1]) or unspecified (0.0.0.0, [::]) address", ep)
	}
	if ap.Port() == 0 {
		return errors.New("port must be between 1 and 65535")
	}
	return nil
}

func nonNegative(v *validator, field string, n int32) {
	if n < 0 {
		v.add(field, "must be >= 0")
	}
}

func percent(v *validator, field string, p float64) {
	if p < 0 || p > 100 {
		v.add(field, "must be between 0 and 100")
	}
}
