package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/skiffmesh/skiff/pkg/xdslog"
)

// errEnough ends a log that has printed the events --count asked for.
var errEnough = errors.New("enough events")

func newXDSLogCommand(g *globals) *cobra.Command {
	var (
		count   int
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "xds-log PROXY",
		Short: "A live log of one proxy's xDS conversation: every request and response, ACK and NACK",
		Long: `xds-log follows a proxy's ADS stream(s) in pilot (GET /debug/xds_log on the monitoring port) and
prints each DiscoveryRequest the proxy sends (→: a subscription, an ACK or a NACK with Envoy's
error_detail) and each DiscoveryResponse pilot sends it (←: type, version, nonce, resources and
size), as they happen. A proxy that is not connected yet is followed from its first request.
Secrets show as names and sizes only. In Kubernetes mode every pilot Pod is followed, so the
proxy is found whichever pilot it is connected to.

It runs until interrupted, --count events were printed, or --timeout passed.`,
		Example: `  skiffctl xds-log productpage-1.bookinfo
  skiffctl xds-log productpage-1.bookinfo --count 20 -o json
  skiffctl xds-log sidecar~127.0.0.1~productpage-1.bookinfo~bookinfo.svc.cluster.local --timeout 30s`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeProxies(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			ctx, stop := context.WithCancelCause(ctx)
			defer stop(nil)
			pilots, closePilots, err := g.pilots(ctx)
			if err != nil {
				return err
			}
			defer closePilots()

			// Events of several pilots arrive on their own goroutines: one printer at a time.
			var (
				mu      sync.Mutex
				printed int
				werr    error
			)
			show := func(ev xdslog.Event) {
				mu.Lock()
				defer mu.Unlock()
				if werr != nil || (count > 0 && printed >= count) {
					return
				}
				if werr = printEvent(cmd.OutOrStdout(), g.output, ev); werr != nil {
					stop(werr)
					return
				}
				if printed++; count > 0 && printed >= count {
					stop(errEnough)
				}
			}
			var (
				wg   sync.WaitGroup
				errs = make([]error, len(pilots))
			)
			for i, p := range pilots {
				wg.Go(func() { errs[i] = xdslog.Follow(ctx, "http://"+p.Address, args[0], show) })
			}
			wg.Wait()
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, errEnough) &&
				!errors.Is(cause, context.DeadlineExceeded) && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().IntVar(&count, "count", 0, "stop after this many events (0: no limit)")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "stop after this long (0: until interrupted)")
	return cmd
}

// printEvent writes one event: a line of text, a line of JSON, or a YAML document.
func printEvent(w io.Writer, format string, ev xdslog.Event) error {
	var err error
	switch format {
	case "json":
		var js []byte
		if js, err = json.Marshal(ev); err == nil {
			_, err = fmt.Fprintln(w, string(js))
		}
	case "yaml":
		var y []byte
		if y, err = yaml.Marshal(ev); err == nil {
			_, err = fmt.Fprintf(w, "---\n%s", y)
		}
	default:
		_, err = fmt.Fprintln(w, xdslog.Format(ev))
	}
	if err != nil {
		return fmt.Errorf("printing the xds log: %w", err)
	}
	return nil
}
