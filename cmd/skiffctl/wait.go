package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/skiffmesh/skiff/pkg/skiffctl"
)

func newWaitCommand(g *globals) *cobra.Command {
	var (
		req     skiffctl.WaitRequest
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "wait [--for KIND/NAMESPACE/NAME [--version RESOURCE_VERSION] [--deleted]] [--timeout 30s]",
		Short: "Return once every proxy has ACKed the configuration that includes a change",
		Long: `wait returns once pilot's configuration includes a change and every connected proxy has
answered the push that carries it (istioctl x wait), so docs and scripts never race pilot's
push. In folder mode pilot first loads every change written to its folder before the call; in
Kubernetes mode every change it has received from the API server (an event on its way from the
API server can still be missed: --for names the change to wait for).

With --for KIND/NAMESPACE/NAME it waits for that object to be in pilot's configuration: at
--version (its Kubernetes resourceVersion) or later when given; in Kubernetes mode without
--version, at the resourceVersion the API server has now (or gone, if it is deleted); with
--deleted, gone. Without --for it waits for whatever pilot has.

It exits 0 once every proxy has the change, 1 when the timeout passes first (printing what is
still pending) or when a proxy rejected the push (printing Envoy's error).`,
		Example: `  kubectl apply -f reviews.yaml && skiffctl wait --for VirtualService/bookinfo/reviews
  skiffctl wait --for VirtualService/bookinfo/reviews --version 123456
  skiffctl wait --for DestinationRule/bookinfo/reviews --deleted
  echo '...' > config/reviews.yaml && skiffctl wait`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			if req.For == "" && (req.ResourceVersion != "" || req.Deleted) {
				return fmt.Errorf("--version and --deleted say what to wait for of the object --for names")
			}
			if req.For != "" && len(strings.Split(req.For, "/")) != 3 {
				return fmt.Errorf("--for %q: want KIND/NAMESPACE/NAME, such as VirtualService/bookinfo/reviews", req.For)
			}
			// Pilot answers when its own timeout passes; the client waits a little longer, so
			// that it reads what is still pending rather than timing out first.
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+10*time.Second)
			defer cancel()
			deadline := time.Now().Add(timeout)
			if req.For != "" && req.ResourceVersion == "" && !req.Deleted && g.kubernetes() {
				rv, err := currentResourceVersion(ctx, g, req.For)
				if err != nil {
					return err
				}
				req.ResourceVersion, req.Deleted = rv, rv == ""
			}
			pilots, closePilots, err := g.pilots(ctx)
			if err != nil {
				return err
			}
			defer closePilots()
			var results []*skiffctl.WaitResult
			for _, p := range pilots {
				// Each pilot gets what is left of the timeout.
				req.Timeout = max(time.Until(deadline), time.Millisecond)
				res, err := p.Wait(ctx, req)
				if err != nil {
					return err
				}
				results = append(results, res)
			}
			return reportWait(cmd.OutOrStdout(), cmd.ErrOrStderr(), g.output, req, results)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.For, "for", "", "the changed object, KIND/NAMESPACE/NAME (e.g. VirtualService/bookinfo/reviews)")
	f.StringVar(&req.ResourceVersion, "version", "", "the object's resourceVersion to wait for (or a later one)")
	f.BoolVar(&req.Deleted, "deleted", false, "wait for the object to be gone")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

// reportWait prints the verdict and returns the exit status.
func reportWait(out, errOut io.Writer, format string, req skiffctl.WaitRequest, results []*skiffctl.WaitResult) error {
	if format != "table" {
		if err := printData(out, format, results); err != nil {
			return err
		}
	}
	synced, proxies := true, 0
	var rejected int
	for _, r := range results {
		proxies += r.Proxies
		synced = synced && r.Synced
		rejected += len(r.Rejected)
		if format == "table" {
			for _, p := range r.Pending {
				who := strings.TrimSpace(p.Proxy + " " + strings.ToUpper(p.Type))
				if who != "" {
					who += ": "
				}
				fmt.Fprintf(errOut, "pending (pilot %s): %s%s\n", r.Pilot, who, p.WaitingFor)
			}
			for _, rej := range r.Rejected {
				fmt.Fprintf(errOut, "rejected (pilot %s): %s %s version %s: %s\n", r.Pilot, rej.Proxy, strings.ToUpper(rej.Type), rej.Version, rej.Error)
			}
			if r.ConfigReload != "" {
				fmt.Fprintf(errOut, "pilot %s: %s\n", r.Pilot, r.ConfigReload)
			}
			if r.ConfigErrors > 0 {
				fmt.Fprintf(errOut, "pilot %s rejects %d configuration objects or files (skiffctl analyze says which); they are served at their last good version\n", r.Pilot, r.ConfigErrors)
			}
		}
	}
	what := "the latest configuration"
	if req.For != "" {
		what = req.For
		if req.Deleted {
			what += " (deleted)"
		} else if req.ResourceVersion != "" {
			what += " at resourceVersion " + req.ResourceVersion
		}
	}
	switch {
	case !synced:
		return exitError{code: 1, message: fmt.Sprintf("timed out waiting for %s to reach every proxy", what)}
	case rejected > 0:
		return exitError{code: 1, message: fmt.Sprintf("%s reached every proxy, and %d rejected a push", what, rejected)}
	}
	if format == "table" {
		fmt.Fprintf(out, "%s: on every proxy (%d)\n", what, proxies)
	}
	return nil
}

// kindResources maps the kinds pilot reads to their API resources.
var kindResources = map[string]schema.GroupVersionResource{
	"serviceentry":        {Group: "networking.istio.io", Version: "v1", Resource: "serviceentries"},
	"workloadentry":       {Group: "networking.istio.io", Version: "v1", Resource: "workloadentries"},
	"virtualservice":      {Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"},
	"destinationrule":     {Group: "networking.istio.io", Version: "v1", Resource: "destinationrules"},
	"gateway":             {Group: "networking.istio.io", Version: "v1", Resource: "gateways"},
	"sidecar":             {Group: "networking.istio.io", Version: "v1", Resource: "sidecars"},
	"peerauthentication":  {Group: "security.istio.io", Version: "v1", Resource: "peerauthentications"},
	"authorizationpolicy": {Group: "security.istio.io", Version: "v1", Resource: "authorizationpolicies"},
	"service":             {Version: "v1", Resource: "services"},
	"pod":                 {Version: "v1", Resource: "pods"},
	"secret":              {Version: "v1", Resource: "secrets"},
	"endpointslice":       {Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"},
}

// currentResourceVersion is the object's resourceVersion in the API server now, "" when it
// does not exist.
func currentResourceVersion(ctx context.Context, g *globals, target string) (string, error) {
	parts := strings.Split(target, "/")
	gvr, ok := kindResources[strings.ToLower(parts[0])]
	if !ok {
		return "", fmt.Errorf("--for %s: kind %q is not one pilot reads", target, parts[0])
	}
	cfg, err := g.kubeOptions().RESTConfig()
	if err != nil {
		return "", err
	}
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("Kubernetes client: %w", err)
	}
	obj, err := client.Resource(gvr).Namespace(parts[1]).Get(ctx, parts[2], metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("--for %s: %w", target, err)
	}
	return obj.GetResourceVersion(), nil
}
