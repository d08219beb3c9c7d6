// Command skiffctl answers the questions people ask a Skiff mesh, one command per question:
// what did my proxy get, what did it reject and why (proxy-status, proxy-config), what is wrong
// with my configuration (analyze), what applies to this workload (describe), and is my change
// everywhere yet (wait). It reads pilot's monitoring port (--pilot, or in Kubernetes a
// port-forward to the pilot Pods) and Envoy's admin interface; it changes nothing.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/kube"
	"github.com/skiffmesh/skiff/pkg/skiffctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCommand().ExecuteContext(ctx)
	var exit exitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		if exit.message != "" {
			fmt.Fprintln(os.Stderr, "skiffctl:", exit.message)
		}
		stop()
		os.Exit(exit.code)
	default:
		fmt.Fprintln(os.Stderr, "skiffctl:", err)
		stop()
		os.Exit(1)
	}
}

// exitError ends skiffctl with a given exit code (analyze's codes for CI, wait's and --diff's
// verdicts), after the command printed what it found.
type exitError struct {
	code    int
	message string
}

func (e exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.message) }

// globals are the flags every command shares.
type globals struct {
	pilot      string
	kubeconfig string
	context    string
	namespace  string
	output     string
}

// kubernetes reports whether skiffctl works through the API server.
func (g *globals) kubernetes() bool { return g.kubeconfig != "" || g.context != "" }

func (g *globals) kubeOptions() skiffctl.KubeOptions {
	return skiffctl.KubeOptions{Kubeconfig: g.kubeconfig, Context: g.context}
}

// pilots connects to every pilot: the one at --pilot, or in Kubernetes mode each running Pod
// of the pilot Service through a port-forward. close ends the port-forwards.
func (g *globals) pilots(ctx context.Context) (pilots []*skiffctl.Pilot, close func(), err error) {
	if !g.kubernetes() {
		return []*skiffctl.Pilot{skiffctl.NewPilot(g.pilot, "")}, func() {}, nil
	}
	cfg, err := g.kubeOptions().RESTConfig()
	if err != nil {
		return nil, nil, err
	}
	clients, err := kube.NewClients(cfg)
	if err != nil {
		return nil, nil, err
	}
	pods, port, err := skiffctl.PilotPods(ctx, clients.Kube, g.namespace)
	if err != nil {
		return nil, nil, err
	}
	var forwards []*skiffctl.Forward
	close = func() {
		for _, f := range forwards {
			f.Close()
		}
	}
	for _, pod := range pods {
		f, err := skiffctl.PortForward(ctx, cfg, pod.Namespace, pod.Name, port)
		if err != nil {
			close()
			return nil, nil, err
		}
		forwards = append(forwards, f)
		pilots = append(pilots, skiffctl.NewPilot(f.Address, pod.Name+"."+pod.Namespace))
	}
	return pilots, close, nil
}

// envoyAdmin resolves --envoy: host:port of an admin interface, or in Kubernetes mode a Pod
// (POD.NAMESPACE) whose port 15000 is forwarded.
func (g *globals) envoyAdmin(ctx context.Context, target string) (address string, close func(), err error) {
	if !g.kubernetes() || strings.Contains(target, ":") {
		return target, func() {}, nil
	}
	pod, ns, ok := strings.Cut(target, ".")
	if !ok {
		return "", nil, fmt.Errorf("--envoy %q: want POD.NAMESPACE (or the admin's host:port)", target)
	}
	cfg, err := g.kubeOptions().RESTConfig()
	if err != nil {
		return "", nil, err
	}
	f, err := skiffctl.PortForward(ctx, cfg, ns, pod, skiffctl.EnvoyAdminPort)
	if err != nil {
		return "", nil, err
	}
	return f.Address, f.Close, nil
}

// checkOutput validates -o for a command that prints data.
func (g *globals) checkOutput() error {
	switch g.output {
	case "table", "json", "yaml":
		return nil
	}
	return fmt.Errorf("-o %q: want table, json or yaml", g.output)
}

// printData writes v as JSON or YAML, for -o json|yaml.
func printData(w io.Writer, format string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding output: %w", err)
	}
	if format == "yaml" {
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return fmt.Errorf("encoding output as YAML: %w", err)
		}
		_, err = w.Write(y)
		return err
	}
	_, err = fmt.Fprintln(w, string(js))
	return err
}

func newRootCommand() *cobra.Command {
	g := &globals{}
	cmd := &cobra.Command{
		Use:   "skiffctl",
		Short: "Ask a Skiff mesh what its proxies got, what they rejected and why",
		Long: `skiffctl reads pilot's monitoring port and Envoy's admin interface and answers one question
per command. It talks to the pilot at --pilot (localhost:15014), or, with --kubeconfig or
--context, to every pilot Pod of the skiff-pilot Service in --namespace through a port-forward
(as istioctl does).`,
		Example: `  skiffctl proxy-status
  skiffctl proxy-config clusters productpage-1.bookinfo --fqdn reviews
  skiffctl analyze -f examples/
  skiffctl describe pod productpage-1.bookinfo
  skiffctl wait --for VirtualService/bookinfo/reviews
  skiffctl xds-log productpage-1.bookinfo
  skiffctl --kubeconfig ~/.kube/config proxy-status`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			// client-go logs through klog: keep it quiet unless something is wrong.
			klog.SetSlogLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
			return nil
		},
	}
	f := cmd.PersistentFlags()
	f.StringVar(&g.pilot, "pilot", "localhost:15014", "pilot's monitoring address (host:port)")
	f.StringVar(&g.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster pilot runs in: reach pilot through a port-forward")
	f.StringVar(&g.context, "context", "", "kubeconfig context (implies Kubernetes mode)")
	f.StringVarP(&g.namespace, "namespace", "n", "istio-system", "the namespace pilot runs in (Kubernetes mode)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	cmd.AddCommand(
		newProxyStatusCommand(g),
		newProxyConfigCommand(g),
		newAnalyzeCommand(g),
		newDescribeCommand(g),
		newWaitCommand(g),
		newXDSLogCommand(g),
	)
	return cmd
}
