package kube

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// tokenLifetime is how long TokenKubeconfig's tokens are valid: far longer
// than a test, so no test sees one expire.
const tokenLifetime = 24 * 60 * 60 // seconds

// KubeconfigFile writes the admin kubeconfig (the admin's client certificate,
// embedded) to a file of the test's own and returns its path, for kubectl and
// other subprocesses. It stays valid across StopAPIServer/StartAPIServer.
func (c *Cluster) KubeconfigFile(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "admin.kubeconfig")
	if err := c.writeAdminKubeconfig(path); err != nil {
		tb.Fatalf("kube: %v", err)
	}
	return path
}

func (c *Cluster) writeAdminKubeconfig(path string) error {
	return writeKubeconfig(path, c.Config.Host, c.pki.caPEM, adminUser, &clientcmdapi.AuthInfo{
		ClientCertificateData: c.pki.adminCertPEM,
		ClientKeyData:         c.pki.adminKeyPEM,
	})
}

// TokenKubeconfig writes a kubeconfig that authenticates as the ServiceAccount
// namespace/serviceAccount, with a bearer token from the TokenRequest API (as
// a projected token in a pod would be), and returns its path. The namespace
// and ServiceAccount are created if missing; what the ServiceAccount may do is
// up to the test's RBAC objects. The token is valid for a day, across
// apiserver restarts.
func (c *Cluster) TokenKubeconfig(tb testing.TB, namespace, serviceAccount string) string {
	tb.Helper()
	token, err := c.serviceAccountToken(tb, namespace, serviceAccount)
	if err != nil {
		tb.Fatalf("kube: %v", err)
	}
	user := "system:serviceaccount:" + namespace + ":" + serviceAccount
	path := filepath.Join(tb.TempDir(), namespace+"-"+serviceAccount+".kubeconfig")
	if err := writeKubeconfig(path, c.Config.Host, c.pki.caPEM, user, &clientcmdapi.AuthInfo{Token: token}); err != nil {
		tb.Fatalf("kube: %v", err)
	}
	return path
}

// TokenConfig is TokenKubeconfig as a rest.Config, for clients in the test
// process itself.
func (c *Cluster) TokenConfig(tb testing.TB, namespace, serviceAccount string) *rest.Config {
	tb.Helper()
	token, err := c.serviceAccountToken(tb, namespace, serviceAccount)
	if err != nil {
		tb.Fatalf("kube: %v", err)
	}
	return &rest.Config{
		Host:            c.Config.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.caPEM},
		BearerToken:     token,
		QPS:             c.Config.QPS,
		Burst:           c.Config.Burst,
	}
}

// serviceAccountToken creates namespace and serviceAccount unless they exist
// and requests a token for the ServiceAccount.
func (c *Cluster) serviceAccountToken(tb testing.TB, namespace, serviceAccount string) (string, error) {
	ctx := Context(tb)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}
	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount, Namespace: namespace}}
	if _, err := c.Kube.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating ServiceAccount %s/%s: %w", namespace, serviceAccount, err)
	}
	seconds := int64(tokenLifetime)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}
	resp, err := c.Kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for ServiceAccount %s/%s: %w", namespace, serviceAccount, err)
	}
	return resp.Status.Token, nil
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context,
// every credential embedded so the file stands alone.
func writeKubeconfig(path, server string, caPEM []byte, user string, auth *clientcmdapi.AuthInfo) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["skiff-test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["skiff-test"] = &clientcmdapi.Context{Cluster: "skiff-test", AuthInfo: user, Namespace: "default"}
	cfg.CurrentContext = "skiff-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	// WriteToFile keeps an existing file's mode; credentials stay private.
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}
