package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"
)

// This file validates the security.istio.io kinds.

func validatePeerAuthentication(v *validator, pa *security.PeerAuthentication) {
	validateSelector(v, "spec.selector", pa.GetSelector())
	if len(pa.GetPortLevelMtls()) == 0 {
		return
	}
	// Port numbers only mean something for specific workloads: a namespace-wide policy
	// cannot know which of its workloads' ports are which.
	if len(pa.GetSelector().GetMatchLabels()) == 0 {
		v.add("spec.portLevelMtls", "requires a selector with matchLabels: port-level settings apply to selected workloads only")
	}
	ports := make([]int, 0, len(pa.GetPortLevelMtls()))
	for p := range pa.GetPortLevelMtls() {
		ports = append(ports, int(p))
	}
	slices.Sort(ports)
	for _, p := range ports {
		f := key("spec.portLevelMtls", strconv.Itoa(p))
		v.addErr(f, checkPort(uint32(p)))
		if pa.GetPortLevelMtls()[uint32(p)] == nil {
			v.add(f, "must not be null")
		}
	}
}

func validateAuthorizationPolicy(v *validator, ap *security.AuthorizationPolicy) {
	targets := 0
	for _, set := range []bool{ap.GetSelector() != nil, ap.GetTargetRef() != nil, len(ap.GetTargetRefs()) > 0} {
		if set {
			targets++
		}
	}
	if targets > 1 {
		v.add("spec", "only one of selector, targetRef or targetRefs may be set")
	}
	validateSelector(v, "spec.selector", ap.GetSelector())

	// A provider names the external authorizer CUSTOM delegates to; with any other action it
	// would be silently ignored.
	provider := ap.GetProvider()
	if ap.GetAction() == security.AuthorizationPolicy_CUSTOM {
		if provider.GetName() == "" {
			v.add("spec.provider.name", "required with action CUSTOM")
		}
	} else if provider != nil {
		v.add("spec.provider", "only allowed with action CUSTOM, not %s", ap.GetAction())
	}

	for i, r := range ap.GetRules() {
		f := idx("spec.rules", i)
		if r == nil {
			v.add(f, "must not be null")
			continue
		}
		for j, from := range r.GetFrom() {
			validateSource(v, idx(f+".from", j)+".source", from.GetSource())
		}
		for j, to := range r.GetTo() {
			validateOperation(v, idx(f+".to", j)+".operation", to.GetOperation())
		}
		for j, c := range r.GetWhen() {
			validateCondition(v, idx(f+".when", j), c)
		}
	}
}

// stringList is one named list field of a source or operation.
type stringList struct {
	name   string
	values []string
	check  func(string) error // extra per-value check, or nil
}

// validateLists checks a group of lists, which must not all be empty (an empty source or
// operation is a mistake: it would match everything while looking like it restricts), and whose
// values must not be empty strings.
func validateLists(v *validator, path string, lists []stringList) {
	empty := true
	for _, l := range lists {
		if len(l.values) > 0 {
			empty = false
		}
		for i, val := range l.values {
			f := idx(path+"."+l.name, i)
			if val == "" {
				v.add(f, "must not be empty")
				continue
			}
			if l.check != nil {
				v.addErr(f, l.check(val))
			}
		}
	}
	if empty {
		v.add(path, "must set at least one field")
	}
}

func validateSource(v *validator, path string, s *security.Source) {
	if s == nil {
		v.add(path, "required")
		return
	}
	validateLists(v, path, []stringList{
		{"principals", s.GetPrincipals(), nil},
		{"notPrincipals", s.GetNotPrincipals(), nil},
		{"requestPrincipals", s.GetRequestPrincipals(), nil},
		{"notRequestPrincipals", s.GetNotRequestPrincipals(), nil},
		{"namespaces", s.GetNamespaces(), nil},
		{"notNamespaces", s.GetNotNamespaces(), nil},
		{"serviceAccounts", s.GetServiceAccounts(), nil},
		{"notServiceAccounts", s.GetNotServiceAccounts(), nil},
		{"ipBlocks", s.GetIpBlocks(), checkIPOrCIDR},
		{"notIpBlocks", s.GetNotIpBlocks(), checkIPOrCIDR},
		{"remoteIpBlocks", s.GetRemoteIpBlocks(), checkIPOrCIDR},
		{"notRemoteIpBlocks", s.GetNotRemoteIpBlocks(), checkIPOrCIDR},
		{"trustDomains", s.GetTrustDomains(), nil},
		{"notTrustDomains", s.GetNotTrustDomains(), nil},
	})
	// Service accounts already name a namespace; mixing them with namespaces or principals is
	// ambiguous, and the CRD forbids it.
	if len(s.GetServiceAccounts())+len(s.GetNotServiceAccounts()) > 0 &&
		len(s.GetPrincipals())+len(s.GetNotPrincipals())+len(s.GetNamespaces())+len(s.GetNotNamespaces()) > 0 {
		v.add(path, "serviceAccounts cannot be combined with principals or namespaces")
	}
}

func validateOperation(v *validator, path string, o *security.Operation) {
	if o == nil {
		v.add(path, "required")
		return
	}
	validateLists(v, path, []stringList{
		{"hosts", o.GetHosts(), nil},
		{"notHosts", o.GetNotHosts(), nil},
		{"ports", o.GetPorts(), checkPortString},
		{"notPorts", o.GetNotPorts(), checkPortString},
		{"methods", o.GetMethods(), nil},
		{"notMethods", o.GetNotMethods(), nil},
		{"paths", o.GetPaths(), nil},
		{"notPaths", o.GetNotPaths(), nil},
	})
}

// checkPortString checks a port number written as a string, as authorization rules do.
func checkPortString(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("%q is not a port number", s)
	}
	return checkPort(uint32(n))
}

// conditionKeys are the attributes a "when" condition can test; request.headers[NAME],
// request.auth.claims[NAME] and experimental.* keys are also allowed.
var conditionKeys = []string{
	"source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
	"request.auth.principal", "request.auth.audiences", "request.auth.presenter",
	"destination.ip", "destination.port", "connection.sni",
}

func validateCondition(v *validator, path string, c *security.Condition) {
	if c == nil {
		v.add(path, "must not be null")
		return
	}
	k := c.GetKey()
	var check func(string) error
	switch {
	case k == "":
		v.add(path+".key", "required")
	case k == "source.ip" || k == "remote.ip" || k == "destination.ip":
		check = checkIPOrCIDR
	case k == "destination.port":
		check = checkPortString
	case isIndexedKey(k, "request.headers["), isIndexedKey(k, "request.auth.claims["),
		strings.HasPrefix(k, "experimental."):
	case !slices.Contains(conditionKeys, k):
		v.add(path+".key", "unknown key %q; use request.headers[NAME], request.auth.claims[NAME] or one of %s", k, strings.Join(conditionKeys, ", "))
	}
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		v.add(path, "at least one of values or notValues is required")
	}
	for _, l := range []stringList{{"values", c.GetValues(), check}, {"notValues", c.GetNotValues(), check}} {
		for i, val := range l.values {
			f := idx(path+"."+l.name, i)
			if val == "" {
				v.add(f, "must not be empty")
			} else if check != nil {
				v.addErr(f, check(val))
			}
		}
	}
}

// isIndexedKey reports whether k is prefix + NAME + "]" with a non-empty NAME.
func isIndexedKey(k, prefix string) bool {
	name, ok := strings.CutPrefix(k, prefix)
	return ok && len(name) > 1 && strings.HasSuffix(name, "]")
}
