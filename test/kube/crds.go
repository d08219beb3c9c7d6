package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensions "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// crdDir is where the CRDs live, relative to the repository root: the files
// that its kustomization.yaml lists (`make crds` refreshes them).
const crdDir = "deploy/crds"

// fieldManager names the harness in managedFields.
const fieldManager = "skiff-test"

// CRDNames returns the names of the CRDs in deploy/crds (such as
// "virtualservices.networking.istio.io"), which every cluster has Established.
func (c *Cluster) CRDNames(tb testing.TB) []string {
	tb.Helper()
	crds, err := readCRDs(c.root)
	if err != nil {
		tb.Fatalf("kube: %v", err)
	}
	names := make([]string, len(crds))
	for i, crd := range crds {
		names[i] = crd.Name
	}
	return names
}

// installCRDs applies every CRD in deploy/crds (server-side apply, as
// `kubectl apply --server-side -k deploy/crds` would) and waits until each is
// Established, that is served, so tests can use them at once.
func (c *Cluster) installCRDs() error {
	crds, err := readCRDs(c.root)
	if err != nil {
		return err
	}
	client, err := apiextensions.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("building the apiextensions client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), crdTimeout)
	defer cancel()
	for _, crd := range crds {
		body, err := json.Marshal(crd)
		if err != nil {
			return fmt.Errorf("encoding CRD %s: %w", crd.Name, err)
		}
		force := true
		_, err = client.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, crd.Name, types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: fieldManager, Force: &force})
		if err != nil {
			return fmt.Errorf("applying CRD %s: %w", crd.Name, err)
		}
	}
	names := make([]string, len(crds))
	for i, crd := range crds {
		names[i] = crd.Name
	}
	return waitEstablished(ctx, client, names)
}

// WaitEstablished polls until every named CRD (such as
// "issuers.cert-manager.io") is Established and its names accepted, for CRDs a
// test installs itself. A freshly created CRD has no conditions at all for a
// moment (`kubectl wait --for condition=established` fails at once on that), so
// this asks the API server until the conditions say so.
func (c *Cluster) WaitEstablished(tb testing.TB, names ...string) {
	tb.Helper()
	client, err := apiextensions.NewForConfig(c.Config)
	if err != nil {
		tb.Fatalf("kube: building the apiextensions client: %v", err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), crdTimeout)
	defer cancel()
	if err := waitEstablished(ctx, client, names); err != nil {
		tb.Fatalf("kube: %v", err)
	}
}

func waitEstablished(ctx context.Context, client apiextensions.Interface, names []string) error {
	for _, name := range names {
		var last error = errors.New("not read yet")
		err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			got, err := client.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err
				return false, nil
			}
			last = fmt.Errorf("conditions %v", got.Status.Conditions)
			return established(got), nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not Established within %v; last seen: %v", name, crdTimeout, last)
		}
	}
	return nil
}

// established reports whether crd is Established (and its names accepted).
func established(crd *apiextensionsv1.CustomResourceDefinition) bool {
	var est, names bool
	for _, cond := range crd.Status.Conditions {
		switch cond.Type {
		case apiextensionsv1.Established:
			est = cond.Status == apiextensionsv1.ConditionTrue
		case apiextensionsv1.NamesAccepted:
			names = cond.Status == apiextensionsv1.ConditionTrue
		}
	}
	return est && names
}

// readCRDs decodes every CustomResourceDefinition in the files that
// deploy/crds/kustomization.yaml lists as resources.
func readCRDs(root string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	dir := filepath.Join(root, crdDir)
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("reading the CRDs' kustomization: %w", err)
	}
	var kustomization struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &kustomization); err != nil {
		return nil, fmt.Errorf("parsing %s/kustomization.yaml: %w", crdDir, err)
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, name := range kustomization.Resources {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading CRDs: %w", err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 64<<10)
		for {
			crd := new(apiextensionsv1.CustomResourceDefinition)
			if err := dec.Decode(crd); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("decoding %s/%s: %w", crdDir, name, err)
			}
			if crd.Kind == "" {
				continue // an empty document, such as after a trailing "---"
			}
			if crd.Kind != "CustomResourceDefinition" {
				return nil, fmt.Errorf("%s/%s holds a %s %q: only CRDs belong there", crdDir, name, crd.Kind, crd.Name)
			}
			crds = append(crds, crd)
		}
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("no CRDs in %s: run `make crds`", crdDir)
	}
	return crds, nil
}
