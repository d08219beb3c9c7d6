package model

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Gateway servers pilot leaves out of a gateway proxy's listeners, each reported on the
// Gateway with the field that decides it (translate/gateway.go leaves them out):
//
//   - a credentialName (or credentialNames entry, or caCertCredentialName) whose Secret is not
//     in the gateway proxy's namespace: IST0101, as istioctl analyze reports it; a MUTUAL or
//     OPTIONAL_MUTUAL server whose CA Secret has no ca.crt: IST0161;
//   - an ISTIO_MUTUAL server that no gateway proxy it selects can serve, because none can be
//     granted a workload certificate (its node ID must name a Pod or WorkloadEntry with a
//     service account and an IP address): SKF0002;
//   - what Skiff does not implement (AUTO_PASSTHROUGH, unix domain socket binds): SKF0001;
//   - a server that conflicts with one merged before it on a proxy both select: IST0145
//     (analysis_gateway_conflicts.go).
//
// The analysis sees the snapshot, not the proxies that will connect: the gateway proxies a
// Gateway selects are the Pods and WorkloadEntries whose labels its selector matches, and
// credentials are looked up in their namespaces, as istioctl analyze does. A gateway proxy
// that no such workload stands for (folder mode, labels from node metadata) is invisible
// here; for it a Secret is reported missing only when no namespace has it, so that a warning
// is never a guess.

// gatewayWarnings reports the servers of every Gateway that pilot leaves out.
func (s *Snapshot) gatewayWarnings() []Warning {
	if s.Config == nil || len(s.Config.Gateways) == 0 {
		return nil
	}
	a := gatewayAnalysis{
		snap:      s,
		secrets:   make(map[string]*corev1.Secret, len(s.Config.Secrets)),
		secretNS:  map[string]bool{},
		workloads: s.allWorkloads(),
		selected:  map[string][]*Workload{},
	}
	for _, sec := range s.Config.Secrets {
		a.secrets[sec.Namespace+"/"+sec.Name] = sec
		a.secretNS[sec.Name] = true
	}
	var out []Warning
	for _, gw := range s.Config.Gateways {
		out = append(out, a.gateway(gw)...)
	}
	return append(out, s.gatewayConflictWarnings(&a)...)
}

// gatewayAnalysis is what the Gateway checks share: the Secrets by NAMESPACE/NAME (and which
// names exist anywhere), every workload, and the workloads each selector picks, computed once
// per distinct selector (a thousand Gateways often share one).
type gatewayAnalysis struct {
	snap      *Snapshot
	secrets   map[string]*corev1.Secret
	secretNS  map[string]bool // Secret names that exist in some namespace
	workloads []*Workload
	selected  map[string][]*Workload
}

// gateway checks one Gateway's servers.
func (a *gatewayAnalysis) gateway(gw *networkingv1.Gateway) []Warning {
	var out []Warning
	warn := func(code, field, format string, args ...any) {
		out = append(out, Warning{Code: code, Kind: "Gateway", Namespace: gw.Namespace, Name: gw.Name,
			Field: field, Message: fmt.Sprintf(format, args...)})
	}
	workloads := a.selectedBy(gw.Spec.Selector)
	// Where the proxies run, which decides where credentials are looked up: an empty selector
	// matches every gateway proxy, wherever it runs, and so says nothing.
	located := workloads
	if len(gw.Spec.Selector) == 0 {
		located = nil
	}
	for i, srv := range gw.Spec.Servers {
		f := fmt.Sprintf("spec.servers[%d]", i)
		if strings.HasPrefix(srv.GetBind(), "unix://") {
			warn(CodeNotServed, f+".bind", "unix domain socket binds are not supported by Skiff: the server is left out")
			continue
		}
		tls := srv.GetTls()
		if tls == nil || ParseProtocol(srv.GetPort().GetProtocol()).IsHTTP() {
			continue // plaintext (an HTTP server's tls only redirects to https)
		}
		switch tls.GetMode() {
		case networking.ServerTLSSettings_AUTO_PASSTHROUGH:
			warn(CodeNotServed, f+".tls.mode", "AUTO_PASSTHROUGH (multi-network SNI routing to mesh endpoints) is not supported by Skiff: the server is left out")
		case networking.ServerTLSSettings_ISTIO_MUTUAL:
			if !slices.ContainsFunc(workloads, (*Workload).CanHoldIdentity) {
				warn(CodeGatewayWithoutIdentity, f+".tls.mode",
					"ISTIO_MUTUAL serves the gateway proxy's own workload certificate, which pilot grants only to a proxy whose node ID names a Pod or WorkloadEntry with a serviceAccount and an IP address; %s, so no gateway proxy serves this server",
					describeSelected(gw.Spec.Selector, workloads))
			}
		case networking.ServerTLSSettings_SIMPLE, networking.ServerTLSSettings_MUTUAL, networking.ServerTLSSettings_OPTIONAL_MUTUAL:
			for _, ref := range serverCredentials(tls) {
				if code, msg := a.checkCredential(located, ref, tls.GetMode()); code != "" {
					warn(code, f+".tls."+ref.field, "%s", msg)
				}
			}
		}
	}
	return out
}

// describeSelected says which workloads a selector picks, for a message.
func describeSelected(selector map[string]string, workloads []*Workload) string {
	if len(workloads) == 0 {
		if len(selector) == 0 {
			return "no Pod or WorkloadEntry exists"
		}
		return fmt.Sprintf("no Pod or WorkloadEntry has the labels %s", selectorString(selector))
	}
	names := make([]string, 0, len(workloads))
	for _, w := range workloads {
		names = append(names, w.Kind+" "+w.Namespace+"/"+w.Name)
	}
	if len(names) > 3 {
		names = append(names[:3], fmt.Sprintf("and %d more", len(workloads)-3))
	}
	return "none of the workloads it selects (" + strings.Join(names, ", ") + ") has both"
}

func selectorString(selector map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(selector)) {
		parts = append(parts, k+"="+selector[k])
	}
	return strings.Join(parts, ",")
}

// serverCredential is one Secret a server's TLS settings name, with the field that names it.
type serverCredential struct {
	field  string // credentialName, credentialNames[N] or caCertCredentialName
	secret string // NAME, or NAMESPACE/NAME, without kubernetes://
	ca     bool   // ca.crt is what is needed, to verify client certificates
}

// serverCredentials lists the Secrets of SIMPLE, MUTUAL and OPTIONAL_MUTUAL settings as
// translation reads them (translate.CredentialSecretNames): each credential, and for the
// modes that verify clients the CA, from caCertCredentialName if set, else from the first
// credential's ca.crt.
func serverCredentials(tls *networking.ServerTLSSettings) []serverCredential {
	var out []serverCredential
	if names := tls.GetCredentialNames(); len(names) > 0 {
		for j, n := range names {
			out = append(out, serverCredential{field: fmt.Sprintf("credentialNames[%d]", j), secret: n})
		}
	} else if n := tls.GetCredentialName(); n != "" {
		out = append(out, serverCredential{field: "credentialName", secret: n})
	}
	if len(out) == 0 {
		return nil // the settings read files
	}
	for i := range out {
		out[i].secret = strings.TrimPrefix(out[i].secret, "kubernetes://")
	}
	mode := tls.GetMode()
	if mode == networking.ServerTLSSettings_MUTUAL || mode == networking.ServerTLSSettings_OPTIONAL_MUTUAL {
		ca := serverCredential{field: out[0].field, secret: out[0].secret, ca: true}
		if n := tls.GetCaCertCredentialName(); n != "" {
			ca = serverCredential{field: "caCertCredentialName", secret: strings.TrimPrefix(n, "kubernetes://"), ca: true}
		}
		out = append(out, ca)
	}
	return out
}

// checkCredential looks a credential up where the Gateway's proxies run, and returns the code
// and message of the first problem, or "" when the Secret serves.
func (a *gatewayAnalysis) checkCredential(workloads []*Workload, ref serverCredential, mode networking.ServerTLSSettings_TLSmode) (code, msg string) {
	refNS, name, qualified := strings.Cut(ref.secret, "/")
	if !qualified {
		name, refNS = ref.secret, ""
	}
	if len(workloads) == 0 {
		// No known proxy: only a Secret that exists nowhere is certainly missing.
		if !a.secretNS[name] {
			return CodeReferencedResourceNotFound, fmt.Sprintf("referenced credential not found: %q: no Secret %s exists in any namespace: the server is left out",
				ref.secret, name)
		}
		return "", ""
	}
	for _, ns := range workloadNamespaces(workloads) {
		where := fmt.Sprintf("in namespace %s, where the gateway workload %s runs", ns, firstIn(workloads, ns))
		if qualified && refNS != ns {
			return CodeReferencedResourceNotFound, fmt.Sprintf("referenced credential not found: %q: a gateway proxy reads Secrets of its own namespace only (%s): the server is left out there", ref.secret, ns)
		}
		sec := a.secrets[ns+"/"+name]
		switch {
		case sec == nil:
			return CodeReferencedResourceNotFound, fmt.Sprintf("referenced credential not found: %q: no Secret %s %s: the server is left out there", ref.secret, name, where)
		case ref.ca && len(sec.Data[config.SecretCAKey]) == 0:
			return CodeInvalidGatewayCredential, fmt.Sprintf("Secret %s/%s has no %s, which %s needs to verify client certificates (Skiff does not read a separate %s-cacert Secret): the server is left out there",
				ns, name, config.SecretCAKey, mode, name)
		}
	}
	return "", ""
}

// workloadNamespaces are the namespaces of the workloads, sorted.
func workloadNamespaces(workloads []*Workload) []string {
	var out []string
	for _, w := range workloads {
		out = append(out, w.Namespace)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// firstIn names the first workload in namespace ns.
func firstIn(workloads []*Workload, ns string) string {
	for _, w := range workloads {
		if w.Namespace == ns {
			return w.Kind + " " + w.Name
		}
	}
	return ""
}

// selectedBy returns the workloads whose labels a Gateway selector matches (every workload
// for an empty selector).
func (a *gatewayAnalysis) selectedBy(selector map[string]string) []*Workload {
	key := selectorString(selector)
	if got, ok := a.selected[key]; ok {
		return got
	}
	var out []*Workload
	for _, w := range a.workloads {
		if labelsMatch(w.Labels, selector) {
			out = append(out, w)
		}
	}
	a.selected[key] = out
	return out
}

// allWorkloads lists every Pod and every WorkloadEntry that no Pod of the same name hides
// (Snapshot.Workload prefers the Pod), by namespace and name.
func (s *Snapshot) allWorkloads() []*Workload {
	out := make([]*Workload, 0, len(s.pods)+len(s.workloads))
	for _, key := range slices.Sorted(maps.Keys(s.pods)) {
		out = append(out, workloadFromPod(s.pods[key]))
	}
	for _, key := range slices.Sorted(maps.Keys(s.workloads)) {
		if s.pods[key] == nil {
			out = append(out, workloadFromEntry(s.workloads[key]))
		}
	}
	slices.SortStableFunc(out, func(a, b *Workload) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}
