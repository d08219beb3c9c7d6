package config

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	securityv1 "istio.io/client-go/pkg/apis/security/v1"
	telemetryv1 "istio.io/client-go/pkg/apis/telemetry/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Validate checks an object for the mistakes istiod would reject: required fields, value
// ranges, malformed hosts and addresses, contradictory settings. It does not look at other
// objects (references to hosts or gateways that do not exist simply match nothing, as in
// Istio). The error, if any, is an *ErrorList naming each offending field.
func Validate(o Object) error {
	errs := validate(o)
	for _, e := range errs {
		e.Doc = -1
	}
	return joinErrors(errs)
}

// validate returns the problems of one object, with Kind, Namespace, Name and Field set.
func validate(o Object) []*Error {
	if o == nil {
		return []*Error{{Doc: -1, Err: errors.New("nil object")}}
	}
	v := &validator{}
	validateMeta(v, o)
	var spec proto.Message
	switch o := o.(type) {
	case *networkingv1.ServiceEntry:
		spec = &o.Spec
		validateServiceEntry(v, &o.Spec)
	case *networkingv1.WorkloadEntry:
		spec = &o.Spec
		validateWorkloadEntry(v, "spec", &o.Spec)
	case *networkingv1.VirtualService:
		spec = &o.Spec
		validateVirtualService(v, &o.Spec)
	case *networkingv1.DestinationRule:
		spec = &o.Spec
		validateDestinationRule(v, &o.Spec)
	case *networkingv1.Gateway:
		spec = &o.Spec
		validateGateway(v, &o.Spec)
	case *networkingv1.Sidecar:
		spec = &o.Spec
		validateSidecar(v, &o.Spec)
	case *securityv1.PeerAuthentication:
		spec = &o.Spec
		validatePeerAuthentication(v, &o.Spec)
	case *securityv1.AuthorizationPolicy:
		spec = &o.Spec
		validateAuthorizationPolicy(v, &o.Spec)
	case *telemetryv1.Telemetry:
		spec = &o.Spec
		validateTelemetry(v, &o.Spec)
	case *corev1.Secret:
		validateSecret(v, o) // no spec: type and data
	case *corev1.Namespace:
	case *corev1.Service:
		validateService(v, o)
	case *discoveryv1.EndpointSlice:
		validateEndpointSlice(v, o)
	case *corev1.Pod:
		validatePod(v, o)
	default:
		v.add("", "unsupported object type %T", o)
	}
	if spec != nil {
		checkProtoValues(v, spec.ProtoReflect(), "spec")
	}
	out := make([]*Error, len(v.errs))
	for i, fe := range v.errs {
		out[i] = &Error{Doc: -1, Kind: KindOf(o), Namespace: o.GetNamespace(), Name: o.GetName(), Field: fe.field, Err: fe.err}
	}
	return out
}

// validator collects the problems of one object, each with its field path.
type validator struct {
	errs []fieldError
}

type fieldError struct {
	field string
	err   error
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, fieldError{field: field, err: fmt.Errorf(format, args...)})
}

// addErr records err, if not nil, against field.
func (v *validator) addErr(field string, err error) {
	if err != nil {
		v.errs = append(v.errs, fieldError{field: field, err: err})
	}
}

// idx and key build field paths: idx("spec.hosts", 2) is "spec.hosts[2]".
func idx(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }
func key(path, k string) string     { return path + "[" + k + "]" }

func validateMeta(v *validator, o Object) {
	if o.GetName() == "" {
		v.add("metadata.name", "required")
	} else if msgs := validation.IsDNS1123Subdomain(o.GetName()); len(msgs) > 0 {
		v.add("metadata.name", "invalid name %q: %s", o.GetName(), strings.Join(msgs, "; "))
	}
	if _, ok := o.(*corev1.Namespace); ok {
		if o.GetNamespace() != "" {
			v.addErr("metadata.namespace", errNotNamespaced)
		}
	} else if msgs := validation.IsDNS1123Label(o.GetNamespace()); len(msgs) > 0 {
		v.add("metadata.namespace", "invalid namespace %q: %s", o.GetNamespace(), strings.Join(msgs, "; "))
	}
	validateLabels(v, "metadata.labels", o.GetLabels())
}

// validateLabels checks label keys and values with the Kubernetes rules, which selectors
// matched against workload labels must also follow.
func validateLabels(v *validator, field string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			v.add(key(field, k), "invalid label key: %s", strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(labels[k]); len(msgs) > 0 {
			v.add(key(field, k), "invalid label value %q: %s", labels[k], strings.Join(msgs, "; "))
		}
	}
}

// dnsLabel is a DNS label as Istio accepts it in hosts: unlike Kubernetes names, upper case is
// allowed (DNS is case-insensitive).
var dnsLabel = regexp.MustCompile(`^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$`)

// checkHostname checks a DNS name: dot-separated labels of at most 63 characters, 255 in all.
func checkHostname(host string) error {
	if host == "" {
		return errors.New("empty host")
	}
	if len(host) > 255 {
		return fmt.Errorf("host %q is longer than 255 characters", host)
	}
	for _, label := range strings.Split(host, ".") {
		if len(label) > 63 || !dnsLabel.MatchString(label) {
			return fmt.Errorf("invalid host %q: %q is not a DNS label", host, label)
		}
	}
	return nil
}

// checkWildcardHost checks a host that may start with a "*." wildcard, or be "*" itself.
func checkWildcardHost(host string) error {
	if host == "*" {
		return nil
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if err := checkHostname(rest); err != nil {
			return fmt.Errorf("invalid wildcard host %q: %w", host, err)
		}
		return nil
	}
	if strings.Contains(host, "*") {
		return fmt.Errorf("invalid host %q: a wildcard must be the whole first label (\"*.example.com\")", host)
	}
	return checkHostname(host)
}

// checkPort checks a port number.
func checkPort(n uint32) error {
	if n < 1 || n > 65535 {
		return fmt.Errorf("port number %d must be between 1 and 65535", n)
	}
	return nil
}

// protocols are the port protocols Istio recognises, upper-cased; the names are
// case-insensitive.
var protocols = []string{"HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "HTTP_PROXY", "MONGO", "REDIS", "MYSQL", "TCP", "TLS", "UDP", "THRIFT"}

func checkProtocol(p string) error {
	for _, known := range protocols {
		if strings.EqualFold(p, known) {
			return nil
		}
	}
	return fmt.Errorf("unknown protocol %q; Istio's protocols are %s (any case)", p, strings.Join(protocols, ", "))
}

// checkPortName checks a port name, which Istio requires to be a DNS label.
func checkPortName(name string) error {
	if name == "" {
		return errors.New("required")
	}
	if len(name) > 63 || !dnsLabel.MatchString(name) {
		return fmt.Errorf("invalid port name %q: must be a DNS label (letters, digits and '-')", name)
	}
	return nil
}

// checkIPOrCIDR accepts an IP address or a CIDR block.
func checkIPOrCIDR(s string) error {
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Errorf("invalid CIDR %q", s)
		}
		return nil
	}
	if _, err := netip.ParseAddr(s); err != nil {
		return fmt.Errorf("invalid IP address %q", s)
	}
	return nil
}

// validateExportTo checks an exportTo list: "*" (everywhere), "." (own namespace), "~" (nowhere) or
// namespace names; "*" and "~" make no sense with anything else.
func validateExportTo(v *validator, field string, exportTo []string) {
	seen := map[string]bool{}
	for i, ns := range exportTo {
		f := idx(field, i)
		switch {
		case ns == "*" || ns == "." || ns == "~":
		case len(validation.IsDNS1123Label(ns)) > 0:
			v.add(f, "invalid namespace %q: must be \"*\", \".\", \"~\" or a namespace name", ns)
		}
		if seen[ns] {
			v.add(f, "duplicate %q", ns)
		}
		seen[ns] = true
	}
	if len(exportTo) > 1 && (seen["*"] || seen["~"]) {
		v.add(field, "\"*\" and \"~\" cannot be combined with other values")
	}
}

// checkRegex compiles a regular expression. Envoy uses RE2; Go's regexp has the same syntax
// bar a few rarely used features, so this catches the common mistakes.
func checkRegex(re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return fmt.Errorf("invalid regular expression %q: %w", re, err)
	}
	return nil
}

// checkProtoValues walks a spec for what protojson lets through but nothing downstream can use:
// enum numbers that have no name (enums may be written as numbers), and negative or
// out-of-range durations. Fields are visited in declaration order so errors are deterministic.
func checkProtoValues(v *validator, m protoreflect.Message, path string) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		field := path + "." + fd.JSONName()
		val := m.Get(fd)
		switch {
		case fd.IsList():
			list := val.List()
			for j := range list.Len() {
				checkProtoValue(v, fd, list.Get(j), idx(field, j))
			}
		case fd.IsMap():
			var keys []protoreflect.MapKey
			val.Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k)
				return true
			})
			sortMapKeys(keys)
			for _, k := range keys {
				checkProtoValue(v, fd.MapValue(), val.Map().Get(k), key(field, k.String()))
			}
		default:
			checkProtoValue(v, fd, val, field)
		}
	}
}

func checkProtoValue(v *validator, fd protoreflect.FieldDescriptor, val protoreflect.Value, field string) {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if fd.Enum().Values().ByNumber(val.Enum()) == nil {
			v.add(field, "unknown %s value %d", fd.Enum().Name(), val.Enum())
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		msg := val.Message()
		if msg.Descriptor().FullName() == "google.protobuf.Duration" {
			v.addErr(field, checkDuration(msg))
			return
		}
		checkProtoValues(v, msg, field)
	}
}

// checkDuration rejects negative durations, and ones protojson would not even print.
func checkDuration(msg protoreflect.Message) error {
	fields := msg.Descriptor().Fields()
	secs := msg.Get(fields.ByName("seconds")).Int()
	nanos := msg.Get(fields.ByName("nanos")).Int()
	switch {
	case secs < 0 || nanos < 0:
		return errors.New("duration must not be negative")
	case nanos >= 1e9 || secs > 315576000000:
		return errors.New("duration out of range")
	}
	return nil
}

func sortMapKeys(keys []protoreflect.MapKey) {
	// Keys of one map are all of one kind; numeric ones sort as numbers.
	slices.SortFunc(keys, func(a, b protoreflect.MapKey) int {
		switch a.Interface().(type) {
		case string, bool:
			return cmp.Compare(a.String(), b.String())
		case uint32, uint64:
			return cmp.Compare(a.Uint(), b.Uint())
		default:
			return cmp.Compare(a.Int(), b.Int())
		}
	})
}

// positive checks an optional duration that must be more than zero when set. Negative ones are
// reported by checkProtoValues.
func positive(v *validator, field string, d *durationpb.Duration) {
	if d != nil && d.GetSeconds() == 0 && d.GetNanos() == 0 {
		v.add(field, "duration must be positive")
	}
}
