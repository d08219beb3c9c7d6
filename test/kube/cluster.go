package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skiffmesh/skiff/test/framework"
)

// KubeVersion is the Kubernetes release the cluster runs: the version `make
// kube-tools` builds (hack/kube-tools/go.mod) and the cache folder it builds
// into. Bump both together.
const KubeVersion = "v1.37.2"

// How long start-up may take. Generous, because CI runs test packages side by
// side on two cores, often beside other builds; a healthy start takes a few
// seconds, and these bounds only turn a start that never comes into a failure
// that says what was awaited, well inside go test's -timeout.
const (
	etcdStartTimeout      = 3 * time.Minute
	apiserverStartTimeout = 3 * time.Minute
	crdTimeout            = 3 * time.Minute
)

// Cluster is a running etcd and kube-apiserver with Istio's CRDs installed.
// Its methods are safe for concurrent use by parallel tests.
type Cluster struct {
	// Config is the admin's client configuration (a system:masters client
	// certificate). Copy it with rest.CopyConfig before changing it.
	Config *rest.Config
	// Kube is a Kubernetes clientset for Config.
	Kube kubernetes.Interface
	// Istio is an Istio clientset (networking, security, ...) for Config.
	Istio istioclient.Interface

	bin       string // folder with etcd, kube-apiserver, kubectl
	root      string // repository root
	dir       string // work folder: keys, etcd data, logs, admin kubeconfig
	pki       *pki
	etcdURL   string
	apiAddr   string // 127.0.0.1:port, kept across restarts
	apiArgs   []string
	adminKube string // admin kubeconfig file in dir, for kubectl

	mu        sync.Mutex // guards etcd and apiserver
	etcd      *process
	apiserver *process
	stopped   bool
}

// Option changes how a cluster is started.
type Option func(*options)

type options struct {
	apiserverArgs []string
}

// WithAPIServerArgs adds flags to kube-apiserver's command line (for example
// "--feature-gates=..."); a flag given here is passed after, and so wins over,
// the harness's own.
func WithAPIServerArgs(args ...string) Option {
	return func(o *options) { o.apiserverArgs = append(o.apiserverArgs, args...) }
}

// Start starts a cluster for one test and stops it in tb.Cleanup. It fails the
// test if the binaries are missing (run `make kube-tools`) or the cluster does
// not come up; the logs of etcd and the apiserver are printed when the test
// failed.
func Start(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	c, err := New(opts...)
	if err != nil {
		tb.Fatalf("kube: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() || os.Getenv("SKIFF_TEST_LOGS") != "" {
			tb.Logf("%s", c.Logs())
		}
		if err := c.Stop(); err != nil {
			tb.Errorf("kube: %v", err)
		}
	})
	return c
}

// Main runs a test package's tests against one cluster, shared by all of
// them, and exits: call it from TestMain. The cluster is started before the
// tests and stored in *cluster; it is stopped after them, and its logs printed
// if a test failed (or with SKIFF_TEST_LOGS set).
//
//	var cluster *kube.Cluster
//
//	func TestMain(m *testing.M) { kube.Main(m, &cluster) }
func Main(m *testing.M, cluster **Cluster, opts ...Option) {
	os.Exit(run(m, cluster, opts))
}

func run(m *testing.M, cluster **Cluster, opts []Option) int {
	c, err := New(opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube: %v\n", err)
		return 1
	}
	*cluster = c
	code := m.Run()
	if code != 0 || os.Getenv("SKIFF_TEST_LOGS") != "" {
		fmt.Fprint(os.Stderr, c.Logs())
	}
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "kube: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// New starts a cluster: etcd, then kube-apiserver, then Istio's CRDs from
// deploy/crds, waiting until they are Established. The caller must call Stop,
// whatever happens next; Start and Main do that for tests. On error nothing is
// left running and the error carries the end of the failing process's log.
func New(opts ...Option) (_ *Cluster, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	root, err := framework.FindRepoRoot()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(root, ".cache", "kube-tools", KubeVersion)
	for _, name := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, fmt.Errorf("%s %s is missing (%v): run `make kube-tools` to build it", name, KubeVersion, err)
		}
	}
	sweepStale()
	dir, err := os.MkdirTemp("", workDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("creating the cluster's work folder: %w", err)
	}
	// The owner's pid lets a later run remove this folder should this
	// process die before Stop (see sweepStale).
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("writing the cluster's owner file: %w", err)
	}
	c := &Cluster{bin: bin, root: root, dir: dir, apiArgs: o.apiserverArgs}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, c.Logs())
			_ = c.Stop()
		}
	}()
	if c.pki, err = newPKI(dir); err != nil {
		return nil, err
	}
	if err := c.startEtcd(); err != nil {
		return nil, err
	}
	if err := c.startFirstAPIServer(); err != nil {
		return nil, err
	}
	if err := c.installCRDs(); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop stops the apiserver and etcd and removes the work folder (etcd's data
// included). It is idempotent; the cluster is not usable afterwards.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	for _, p := range []*process{c.apiserver, c.etcd} {
		if p != nil {
			if err := p.stop(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, fmt.Errorf("removing the cluster's work folder: %w", err))
	}
	return errors.Join(errs...)
}

// Logs returns the end of etcd's and the apiserver's logs, for a failure
// report. The apiserver's log spans all its runs.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, name := range []string{"etcd", "kube-apiserver"} {
		path := filepath.Join(c.dir, name+".log")
		if _, err := os.Stat(path); err != nil {
			continue
		}
		fmt.Fprintf(&b, "---- %s log ----\n%s---- end of %s log ----\n", name, logTail(path), name)
	}
	return b.String()
}

// startEtcd starts a single-member etcd on two free loopback ports, retrying
// on new ports if one was taken in the meantime.
func (c *Cluster) startEtcd() error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var client, peer string
		if client, err = freeAddress(); err != nil {
			return err
		}
		if peer, err = freeAddress(); err != nil {
			return err
		}
		// A failed attempt may have initialised the data folder for other
		// peer URLs, which etcd would refuse.
		data := filepath.Join(c.dir, "etcd")
		if err := os.RemoveAll(data); err != nil {
			return fmt.Errorf("clearing etcd's data folder: %w", err)
		}
		c.etcdURL = "http://" + client
		args := []string{
			"--name=default",
			"--data-dir=" + data,
			"--listen-client-urls=" + c.etcdURL,
			"--advertise-client-urls=" + c.etcdURL,
			"--listen-peer-urls=http://" + peer,
			"--initial-advertise-peer-urls=http://" + peer,
			"--initial-cluster=default=http://" + peer,
			// A test cluster's data is thrown away: fsync only slows every
			// write, badly so on a busy CI disk.
			"--unsafe-no-fsync",
			"--log-level=warn",
		}
		var p *process
		if p, err = startProcess("etcd", filepath.Join(c.bin, "etcd"), args, c.logPath("etcd")); err != nil {
			return err
		}
		c.etcd = p
		err = p.WaitFor(etcdStartTimeout, func() error { return httpOK(http.DefaultClient, c.etcdURL+"/health") })
		if err == nil {
			return nil
		}
		_ = p.stop()
		if !strings.Contains(logTail(c.logPath("etcd")), "address already in use") {
			break
		}
	}
	return fmt.Errorf("starting etcd: %w", err)
}

// startFirstAPIServer picks the apiserver's port, starts it, and builds the
// admin clients. Only the first start may move to another port (if the one
// picked was taken meanwhile); restarts keep the address, which kubeconfigs
// already handed out name.
func (c *Cluster) startFirstAPIServer() error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if c.apiAddr, err = freeAddress(); err != nil {
			return err
		}
		if err = c.buildClients(); err != nil {
			return err
		}
		c.mu.Lock()
		err = c.startAPIServerLocked()
		c.mu.Unlock()
		if err == nil || !strings.Contains(logTail(c.logPath("kube-apiserver")), "address already in use") {
			break
		}
	}
	if err != nil {
		return err
	}
	c.adminKube = filepath.Join(c.dir, "admin.kubeconfig")
	return c.writeAdminKubeconfig(c.adminKube)
}

// StartAPIServer starts the apiserver again after StopAPIServer, on the same
// address, with the same etcd, certificates and ServiceAccount signing key, and
// waits until it is ready: existing clients, kubeconfigs and tokens work
// again, and the data is still there.
func (c *Cluster) StartAPIServer(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		tb.Fatalf("kube: StartAPIServer on a stopped cluster")
	}
	if c.apiserver != nil {
		if gone, _ := c.apiserver.Exited(); !gone {
			tb.Fatalf("kube: StartAPIServer: the apiserver is already running")
		}
	}
	if err := c.startAPIServerLocked(); err != nil {
		tb.Fatalf("kube: restarting the apiserver on %s: %v\n%s", c.apiAddr, err, c.Logs())
	}
}

// StopAPIServer stops the apiserver (SIGTERM, as a rolling update would) and
// waits until it has exited, leaving etcd running. Requests fail with
// "connection refused" until StartAPIServer.
func (c *Cluster) StopAPIServer(tb testing.TB) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.apiserver == nil {
		tb.Fatalf("kube: StopAPIServer: no apiserver was started")
	}
	if err := c.apiserver.stop(); err != nil {
		tb.Fatalf("kube: stopping the apiserver: %v", err)
	}
}

// startAPIServerLocked starts kube-apiserver on c.apiAddr and waits for
// /readyz. c.mu is held.
func (c *Cluster) startAPIServerLocked() error {
	host, port, err := net.SplitHostPort(c.apiAddr)
	if err != nil {
		return fmt.Errorf("parsing the apiserver address %q: %w", c.apiAddr, err)
	}
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=" + host,
		"--secure-port=" + port,
		"--advertise-address=" + host,
		"--tls-cert-file=" + c.pki.servingCert,
		"--tls-private-key-file=" + c.pki.servingKey,
		"--client-ca-file=" + c.pki.clientCA,
		"--authorization-mode=Node,RBAC",
		// TokenRequest: tokens are signed with the cluster's key and accepted
		// for the issuer as audience (--api-audiences defaults to it).
		"--service-account-issuer=https://" + c.apiAddr,
		"--service-account-key-file=" + c.pki.saKey,
		"--service-account-signing-key-file=" + c.pki.saKey,
		// Pods need no ServiceAccount: no controller creates "default".
		"--disable-admission-plugins=ServiceAccount",
		// Only the range's configuration; nothing is ever sent there.
		"--service-cluster-ip-range=10.96.0.0/16",
		// The kubernetes Service's endpoint would be 127.0.0.1, which
		// Endpoints validation refuses (a log line a second); no test
		// needs that Service to have endpoints.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--cert-dir=" + filepath.Join(c.dir, "apiserver-certs"),
		// On SIGTERM, end open watches (informers') within a few seconds instead of
		// waiting for them until the 60 s shutdown timeout, so StopAPIServer is a
		// prompt, graceful stop even with controllers connected.
		"--shutdown-watch-termination-grace-period=3s",
	}
	args = append(args, c.apiArgs...)
	p, err := startProcess("kube-apiserver", filepath.Join(c.bin, "kube-apiserver"), args, c.logPath("kube-apiserver"))
	if err != nil {
		return err
	}
	c.apiserver = p
	httpClient, err := rest.HTTPClientFor(c.Config)
	if err != nil {
		return fmt.Errorf("building the readiness client: %w", err)
	}
	defer httpClient.CloseIdleConnections()
	err = p.WaitFor(apiserverStartTimeout, func() error {
		return httpOK(httpClient, c.Config.Host+"/readyz")
	})
	if err != nil {
		_ = p.stop()
		return fmt.Errorf("starting kube-apiserver: %w", err)
	}
	return nil
}

// buildClients makes the admin rest.Config and clientsets for c.apiAddr.
func (c *Cluster) buildClients() error {
	c.Config = &rest.Config{
		Host: "https://" + c.apiAddr,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.pki.caPEM,
			CertData: c.pki.adminCertPEM,
			KeyData:  c.pki.adminKeyPEM,
		},
		// Tests create objects in bursts; client-side throttling at the
		// default 5 QPS would only slow them down.
		QPS:   200,
		Burst: 400,
	}
	var err error
	if c.Kube, err = kubernetes.NewForConfig(c.Config); err != nil {
		return fmt.Errorf("building the Kubernetes clientset: %w", err)
	}
	if c.Istio, err = istioclient.NewForConfig(c.Config); err != nil {
		return fmt.Errorf("building the Istio clientset: %w", err)
	}
	return nil
}

func (c *Cluster) logPath(name string) string { return filepath.Join(c.dir, name+".log") }

// Context returns a context for one call to the cluster from a test: it ends
// with the test, and after framework.Patience, so a hung call fails instead of
// eating the package's whole timeout.
func Context(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(tb.Context(), framework.Patience)
	tb.Cleanup(cancel)
	return ctx
}

// httpOK GETs url and returns nil for a 200, else an error with the body.
func httpOK(client *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// freeAddress returns 127.0.0.1:port with a port that was free a moment ago.
// Another process may take it before the server binds it; the starters retry
// on "address already in use".
func freeAddress() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("picking a free loopback port: %w", err)
	}
	defer l.Close()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.Addr().(*net.TCPAddr).Port)), nil
}

// Work folders are os.TempDir()/skiff-kube-*, each with the pid of the test
// process that owns it.
const (
	workDirPrefix = "skiff-kube-"
	ownerFile     = "owner.pid"
)

// sweepStale removes the work folders (etcd data, logs) of clusters whose test
// process died without stopping them, killed by `go test -timeout` or a
// signal: Pdeathsig ended their etcd and apiserver, but nothing removed their
// files. A folder whose owner still runs, or that has no owner file yet, is
// left alone. Errors are ignored: this is housekeeping.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range dirs {
		raw, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(dir)
	}
}
