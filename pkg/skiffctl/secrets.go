package skiffctl

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

func hcmOf(a *anypb.Any) (*hcmv3.HttpConnectionManager, error) {
	m := &hcmv3.HttpConnectionManager{}
	return m, a.UnmarshalTo(m)
}

func tcpProxyOf(a *anypb.Any) (*tcpproxyv3.TcpProxy, error) {
	m := &tcpproxyv3.TcpProxy{}
	return m, a.UnmarshalTo(m)
}

// PrintSecrets prints istioctl's secret table: for each secret its certificate's serial and
// validity, never key material (which the dumps redact, and ParseConfigDump again).
func PrintSecrets(w io.Writer, rs []*Resource, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "RESOURCE NAME\tTYPE\tSTATUS\tVALID CERT\tSERIAL NUMBER\tNOT AFTER\tNOT BEFORE")
	for _, r := range rs {
		s, _ := r.Message.(*tlsv3.Secret)
		typ, pemBytes := "-", []byte(nil)
		switch {
		case s.GetTlsCertificate() != nil:
			typ, pemBytes = "Cert Chain", dataSourceBytes(s.GetTlsCertificate().GetCertificateChain())
		case s.GetValidationContext() != nil:
			typ, pemBytes = "CA", dataSourceBytes(s.GetValidationContext().GetTrustedCa())
		}
		cert := firstCertificate(pemBytes)
		if cert == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\tfalse\t-\t-\t-\n", r.Name, typ, r.State)
			continue
		}
		valid := now.After(cert.NotBefore) && now.Before(cert.NotAfter)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%x\t%s\t%s\n", r.Name, typ, r.State, valid, cert.SerialNumber,
			cert.NotAfter.UTC().Format(time.RFC3339), cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func dataSourceBytes(ds interface {
	GetInlineBytes() []byte
	GetInlineString() string
}) []byte {
	if b := ds.GetInlineBytes(); len(b) > 0 {
		return b
	}
	return []byte(ds.GetInlineString())
}

// firstCertificate is the first certificate of a PEM bundle, nil when there is none.
func firstCertificate(data []byte) *x509.Certificate {
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			return cert
		}
	}
	return nil
}

// PrintBootstrap prints a summary of Envoy's bootstrap: who it is and where it gets its
// configuration.
func PrintBootstrap(w io.Writer, rs []*Resource) error {
	if len(rs) == 0 {
		return fmt.Errorf("the dump holds no bootstrap")
	}
	b, _ := rs[0].Message.(*bootstrapv3.Bootstrap)
	if b == nil {
		_, err := w.Write(rs[0].JSON)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintf(tw, "NODE ID\t%s\n", b.GetNode().GetId())
	fmt.Fprintf(tw, "CLUSTER\t%s\n", b.GetNode().GetCluster())
	if sa := b.GetAdmin().GetAddress().GetSocketAddress(); sa != nil {
		fmt.Fprintf(tw, "ADMIN\t%s:%d\n", sa.GetAddress(), sa.GetPortValue())
	}
	ads := b.GetDynamicResources().GetAdsConfig()
	for _, gs := range ads.GetGrpcServices() {
		fmt.Fprintf(tw, "ADS\t%s %s\n", ads.GetApiType(), gs.GetEnvoyGrpc().GetClusterName())
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		fmt.Fprintf(tw, "STATIC CLUSTER\t%s\n", c.GetName())
	}
	for _, l := range b.GetStaticResources().GetListeners() {
		fmt.Fprintf(tw, "STATIC LISTENER\t%s\n", l.GetName())
	}
	return tw.Flush()
}
