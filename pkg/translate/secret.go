package translate

import (
	"slices"
	"strings"

	udpaannotations "github.com/cncf/xds/go/udpa/annotations"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/model"
)

// Gateway credentials travel over SDS on the proxy's ADS stream, named as istiod names them:
// `kubernetes://NAME` is the certificate chain and private key of the kubernetes.io/tls Secret
// NAME, and `kubernetes://NAME-cacert` the CA certificates (its ca.crt) that verify client
// certificates. As in istiod, a gateway proxy may read only Secrets in its own namespace, and
// only those its Gateways name.

const (
	// CredentialPrefix starts the SDS name of a Kubernetes Secret.
	CredentialPrefix = "kubernetes://"
	// CACredentialSuffix ends the SDS name of a Secret's CA certificates.
	CACredentialSuffix = "-cacert"
	// Redacted replaces key material in anything printed.
	Redacted = "[redacted]"
)

// credentialRef is one SDS resource a server's TLS settings name.
type credentialRef struct {
	sdsName string // kubernetes://NAME or kubernetes://NAME-cacert
	secret  string // the Secret: NAME, or NAMESPACE/NAME
	ca      bool   // the CA certificates rather than the certificate and key
}

// credentialRefs lists the SDS resources of server TLS settings in the order the TLS context
// names them: each credential, then the CA when client certificates are verified (from
// caCertCredentialName if set, else the first credential, as istiod does). Settings that read
// files name none.
func credentialRefs(tls *networking.ServerTLSSettings) []credentialRef {
	names := tls.GetCredentialNames()
	if len(names) == 0 && tls.GetCredentialName() != "" {
		names = []string{tls.GetCredentialName()}
	}
	if len(names) == 0 {
		return nil
	}
	out := make([]credentialRef, 0, len(names)+1)
	for _, n := range names {
		n = strings.TrimPrefix(n, CredentialPrefix)
		out = append(out, credentialRef{sdsName: CredentialPrefix + n, secret: n})
	}
	if verifiesClients(tls) {
		ca := strings.TrimPrefix(names[0], CredentialPrefix)
		if tls.GetCaCertCredentialName() != "" {
			ca = strings.TrimPrefix(tls.GetCaCertCredentialName(), CredentialPrefix)
		}
		out = append(out, credentialRef{sdsName: CredentialPrefix + ca + CACredentialSuffix, secret: ca, ca: true})
	}
	return out
}

// CredentialSecretNames are the Secrets a gateway server's TLS settings name (credentialName
// or credentialNames, and the CA of a MUTUAL server), which pilot looks up in the gateway
// proxy's namespace. Kubernetes mode watches exactly these.
func CredentialSecretNames(tls *networking.ServerTLSSettings) []string {
	var out []string
	for _, ref := range credentialRefs(tls) {
		if !slices.Contains(out, ref.secret) {
			out = append(out, ref.secret)
		}
	}
	return out
}

// verifiesClients reports whether a TLS mode checks client certificates.
func verifiesClients(tls *networking.ServerTLSSettings) bool {
	return tls.GetMode() == networking.ServerTLSSettings_MUTUAL || tls.GetMode() == networking.ServerTLSSettings_OPTIONAL_MUTUAL
}

// secretIndex finds the Secrets of one namespace by name.
type secretIndex struct {
	namespace string
	byName    map[string]*corev1.Secret
}

func newSecretIndex(snap *model.Snapshot, ns string) secretIndex {
	ix := secretIndex{namespace: ns, byName: map[string]*corev1.Secret{}}
	if snap.Config == nil {
		return ix
	}
	for _, s := range snap.Config.Secrets {
		if s.Namespace == ns {
			ix.byName[s.Name] = s
		}
	}
	return ix
}

// data returns the Secret a reference names, if it is in the index's namespace and holds
// what the reference needs.
func (ix secretIndex) lookup(ref credentialRef) (*corev1.Secret, bool) {
	name := ref.secret
	if ns, n, ok := strings.Cut(name, "/"); ok {
		if ns != ix.namespace {
			return nil, false // another namespace's Secret: never, as in istiod
		}
		name = n
	}
	s := ix.byName[name]
	if s == nil {
		return nil, false
	}
	if ref.ca {
		return s, len(s.Data[config.SecretCAKey]) > 0
	}
	return s, len(s.Data[config.SecretCertKey]) > 0 && len(s.Data[config.SecretKeyKey]) > 0
}

// hasAll reports whether every reference resolves.
func (ix secretIndex) hasAll(refs []credentialRef) bool {
	for _, r := range refs {
		if _, ok := ix.lookup(r); !ok {
			return false
		}
	}
	return true
}

// envoySecret is the SDS resource of a reference that resolves, as istiod builds it.
func (ix secretIndex) envoySecret(ref credentialRef) *tlsv3.Secret {
	s, ok := ix.lookup(ref)
	if !ok {
		return nil
	}
	if ref.ca {
		return &tlsv3.Secret{Name: ref.sdsName, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inlineBytes(s.Data[config.SecretCAKey]),
		}}}
	}
	return &tlsv3.Secret{Name: ref.sdsName, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: inlineBytes(s.Data[config.SecretCertKey]),
		PrivateKey:       inlineBytes(s.Data[config.SecretKeyKey]),
	}}}
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// Secrets builds the SDS secrets a gateway proxy's listeners name by credentialName, sorted by
// name: `kubernetes://NAME` and, for servers that verify clients, `kubernetes://NAME-cacert`.
// Sidecars get none. The result holds private keys: print it only through RedactSecret.
func Secrets(snap *model.Snapshot, proxy *model.Proxy) []*tlsv3.Secret {
	proxy = snap.ResolveProxy(proxy)
	if !namesCredentials(snap, proxy) {
		return nil // most gateways: spare the merge
	}
	merged := mergeGateways(snap, proxy)
	if len(merged.listeners) == 0 {
		return nil
	}
	ix := newSecretIndex(snap, proxy.Namespace)
	seen := map[string]bool{}
	var out []*tlsv3.Secret
	for _, l := range merged.listeners {
		for _, gs := range l.servers {
			if gs.kind != serverHTTPS && gs.kind != serverTLSTerminate {
				continue
			}
			for _, ref := range credentialRefs(gs.server.Tls) {
				if seen[ref.sdsName] {
					continue
				}
				seen[ref.sdsName] = true
				if s := ix.envoySecret(ref); s != nil {
					out = append(out, s)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b *tlsv3.Secret) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// namesCredentials reports whether a server of a Gateway that selects the proxy names a
// Secret.
func namesCredentials(snap *model.Snapshot, proxy *model.Proxy) bool {
	if proxy.Type != model.Router {
		return false
	}
	for _, gw := range selectedGateways(snap, proxy) {
		for _, srv := range gw.Spec.Servers {
			if tls := srv.GetTls(); tls.GetCredentialName() != "" || len(tls.GetCredentialNames()) > 0 {
				return true
			}
		}
	}
	return false
}

// RedactSecret returns a copy of s with every field Envoy's API marks sensitive (private keys,
// passwords, generic secrets, session ticket keys) replaced by "[redacted]", as Envoy's own
// config_dump prints secrets. s is not modified.
func RedactSecret(s *tlsv3.Secret) *tlsv3.Secret {
	out := proto.Clone(s).(*tlsv3.Secret)
	redactSensitive(out.ProtoReflect())
	return out
}

// redactSensitive walks a message and overwrites the fields annotated
// (udpa.annotations.sensitive), whatever message they are in.
func redactSensitive(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if proto.GetExtension(fd.Options(), udpaannotations.E_Sensitive).(bool) {
			m.Set(fd, redactedValue(m, fd))
			return true
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			list := v.List()
			for i := range list.Len() {
				redactSensitive(list.Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				redactSensitive(mv.Message())
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			redactSensitive(v.Message())
		}
		return true
	})
}

// redactedValue is what a sensitive field becomes: a DataSource holding "[redacted]" as Envoy
// prints it, the marker itself for strings and bytes (a list of them becomes one marker), and
// an empty value for anything else.
func redactedValue(m protoreflect.Message, fd protoreflect.FieldDescriptor) protoreflect.Value {
	var marker protoreflect.Value
	switch {
	case fd.IsMap():
		return m.NewField(fd)
	case fd.Kind() == protoreflect.StringKind:
		marker = protoreflect.ValueOfString(Redacted)
	case fd.Kind() == protoreflect.BytesKind:
		marker = protoreflect.ValueOfBytes([]byte(Redacted))
	case fd.Message() != nil && fd.Message().FullName() == "envoy.config.core.v3.DataSource":
		marker = protoreflect.ValueOfMessage((&corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: Redacted}}).ProtoReflect())
	default:
		return m.NewField(fd) // empty: nothing of the original survives
	}
	if fd.IsList() {
		list := m.NewField(fd).List()
		list.Append(marker)
		return protoreflect.ValueOfList(list)
	}
	return marker
}
