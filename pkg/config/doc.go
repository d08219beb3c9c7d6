// Package config reads Skiff's mesh configuration: a folder of Kubernetes-style YAML files
// holding Istio networking and security objects, and the kubernetes.io/tls Secrets that
// Gateways name as credentials.
//
// Files are decoded strictly (unknown fields are errors, as the Kubernetes API server would
// reject them), every supported apiVersion is normalised to the v1 client-go types, and each
// object is validated against the common mistakes istiod would refuse. The Loader re-reads the
// folder on demand and keeps serving the last good contents of a file that has become invalid,
// so one bad edit never takes the mesh down; Watch tells the caller when to re-read.
package config
