package main

import (
	"github.com/spf13/cobra"

	"github.com/skiffmesh/skiff/pkg/ca"
)

func newCACommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Inspect Skiff's certificate authority",
	}
	var dir, trustDomain string
	root := &cobra.Command{
		Use:   "root --ca-dir DIR",
		Short: "Print the root certificate (PEM) that proxies trust",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Load, never create: printing must not mint a new root as a side effect.
			c, err := ca.Load(dir, trustDomain)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(c.RootPEM())
			return err
		},
	}
	root.Flags().StringVar(&dir, "ca-dir", "", "CA directory in Istio's cacerts layout (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)")
	root.Flags().StringVar(&trustDomain, "trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain")
	_ = root.MarkFlagRequired("ca-dir")
	cmd.AddCommand(root)
	return cmd
}
