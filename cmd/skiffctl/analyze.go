package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/kube"
	"github.com/skiffmesh/skiff/pkg/skiffctl"
)

func newAnalyzeCommand(g *globals) *cobra.Command {
	var dir, failure, output string
	cmd := &cobra.Command{
		Use:   "analyze [-f DIR | --kubeconfig FILE]",
		Short: "Every validation error and warning pilot knows, with Istio's codes, for CI",
		Long: `analyze loads configuration exactly as pilot does, from a folder (-f, pilot's --config-dir
loader) or from the API server (--kubeconfig/--context, pilot's Kubernetes source), and prints
every problem pilot would report: objects its validation rejects (IST0106, with the file,
document, object and field), and configuration that loads but will not work as written
(IST0101, IST0109, IST0145, IST0161 and Skiff's SKF codes; docs/warnings.md lists them). No
pilot needs to run.

The exit code is istioctl analyze's: 79 when any message is at or above --failure-threshold
(Istio's codes are Errors, Skiff's SKF codes Warnings), else 65 when a file could not be parsed
at all, else 0.`,
		Example: `  skiffctl analyze -f examples/
  skiffctl analyze -f config/ --failure-threshold Warning
  skiffctl analyze -f config/ -o json
  skiffctl analyze --kubeconfig ~/.kube/config`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkOutput(); err != nil {
				return err
			}
			threshold, err := skiffctl.ParseLevel(failure)
			if err != nil {
				return fmt.Errorf("--failure-threshold: %w", err)
			}
			shown, err := skiffctl.ParseLevel(output)
			if err != nil {
				return fmt.Errorf("--output-threshold: %w", err)
			}
			var messages []skiffctl.Message
			target := dir
			switch {
			case dir != "" && g.kubernetes():
				return fmt.Errorf("pass one of -f DIR and --kubeconfig/--context")
			case dir != "":
				if _, err := os.Stat(dir); err != nil {
					return fmt.Errorf("-f: %w", err)
				}
				messages = skiffctl.AnalyzeFolder(dir)
			case g.kubernetes():
				cfg, err := g.kubeOptions().RESTConfig()
				if err != nil {
					return err
				}
				clients, err := kube.NewClients(cfg)
				if err != nil {
					return err
				}
				log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
				if messages, err = skiffctl.AnalyzeCluster(cmd.Context(), clients, log); err != nil {
					return err
				}
				target = "the cluster at " + cfg.Host
			default:
				return fmt.Errorf("nothing to analyze: pass -f DIR, or --kubeconfig/--context for a cluster")
			}
			var printed []skiffctl.Message
			for _, m := range messages {
				if m.Level >= shown {
					printed = append(printed, m)
				}
			}
			out := cmd.OutOrStdout()
			switch {
			case g.output != "table":
				if printed == nil {
					printed = []skiffctl.Message{}
				}
				if err := printData(out, g.output, printed); err != nil {
					return err
				}
			case len(printed) == 0:
				fmt.Fprintf(cmd.ErrOrStderr(), "\u2714 No validation issues found when analyzing %s.\n", target)
			default:
				skiffctl.PrintMessages(out, printed)
			}
			if code := skiffctl.ExitCode(messages, threshold); code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "file", "f", "", "folder of configuration to analyze, read as pilot's --config-dir")
	cmd.Flags().StringVar(&failure, "failure-threshold", "Error", "the level (Info, Warning, Error) at which analyze exits non-zero (79)")
	cmd.Flags().StringVar(&output, "output-threshold", "Info", "the level (Info, Warning, Error) from which messages are printed")
	return cmd
}
