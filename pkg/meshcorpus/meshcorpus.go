// Package meshcorpus is the shared list of Istio configuration inputs that exercise Skiff's
// whole pipeline: the examples, the docs' mesh, the translation goldens' inputs, and the
// regression cases the translation fuzz target has found. The fuzz target (pkg/translate) seeds
// itself from it, and the real-Envoy test (test/e2e) serves a sample of it to Envoy, so both
// look at the same inputs and an input added in one place is exercised in both.
//
// It also says which part of an input pilot accepts: Accepted splits an input into YAML
// documents and keeps those that decode and validate on their own, the first of any two that
// define the same object, which is what pilot's folder loader serves when each document is a
// file of its own (a file is accepted whole or not at all).
package meshcorpus

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/skiffmesh/skiff/pkg/config"
)

// Input is one corpus entry: a multi-document YAML file.
type Input struct {
	Name string // where it came from, relative to the repository root
	Data []byte
}

// seedGlobs are the files, relative to the repository root, that seed the corpus. A folder of
// YAML (examples/temple-stack) is one input, its files joined, as pilot serves a folder.
var seedGlobs = []string{
	"examples/*.yaml",
	"examples/temple-stack",
	"docs/no-cluster/*.yaml",
	"docs/kind/*.yaml",
	"pkg/config/testdata/good.yaml",
	"pkg/translate/testdata/*.yaml",
}

// FuzzDir is where Go keeps the translation fuzz target's regression cases, relative to the
// repository root.
const FuzzDir = "pkg/translate/testdata/fuzz/FuzzTranslate"

// Seeds returns the seed inputs under the repository root, in a stable order.
func Seeds(root string) ([]Input, error) {
	var out []Input
	for _, pattern := range seedGlobs {
		matches, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", pattern, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("no seed inputs match %s under %s", pattern, root)
		}
		for _, path := range matches {
			in, err := readInput(root, path)
			if err != nil {
				return nil, err
			}
			out = append(out, in)
		}
	}
	return out, nil
}

// readInput reads a file, or a folder's *.yaml files joined as documents of one input.
func readInput(root, path string) (Input, error) {
	rel, _ := filepath.Rel(root, path)
	info, err := os.Stat(path)
	if err != nil {
		return Input{}, fmt.Errorf("reading seed %s: %w", rel, err)
	}
	files := []string{path}
	if info.IsDir() {
		if files, err = filepath.Glob(filepath.Join(path, "*.yaml")); err != nil {
			return Input{}, fmt.Errorf("listing seed folder %s: %w", rel, err)
		}
	}
	var data []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return Input{}, fmt.Errorf("reading seed %s: %w", f, err)
		}
		data = append(append(data, "\n---\n"...), b...)
	}
	return Input{Name: rel, Data: data}, nil
}

// Regressions returns the fuzz target's saved cases (Go's testdata/fuzz format, one []byte
// argument each) under the repository root; none is not an error.
func Regressions(root string) ([]Input, error) {
	dir := filepath.Join(root, FuzzDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing fuzz cases: %w", err)
	}
	var out []Input
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading fuzz case: %w", err)
		}
		data, err := ParseFuzzCase(raw)
		if err != nil {
			return nil, fmt.Errorf("fuzz case %s: %w", path, err)
		}
		out = append(out, Input{Name: filepath.Join(FuzzDir, e.Name()), Data: data})
	}
	return out, nil
}

// ParseFuzzCase decodes a corpus file of `go test -fuzz` with a single []byte argument.
func ParseFuzzCase(raw []byte) ([]byte, error) {
	header, rest, _ := bytes.Cut(raw, []byte("\n"))
	if string(bytes.TrimSpace(header)) != "go test fuzz v1" {
		return nil, fmt.Errorf("not a go test fuzz v1 file")
	}
	arg := strings.TrimSpace(string(rest))
	quoted, ok := strings.CutPrefix(arg, "[]byte(")
	if !ok || !strings.HasSuffix(quoted, ")") {
		return nil, fmt.Errorf("want one []byte(...) argument, got %.40q", arg)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(quoted, ")"))
	if err != nil {
		return nil, fmt.Errorf("unquoting the argument: %w", err)
	}
	return []byte(s), nil
}

// FormatFuzzCase is the corpus file `go test -fuzz` would write for data.
func FormatFuzzCase(data []byte) []byte {
	return []byte("go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n")
}

// Document is one YAML document of an input that pilot accepts, with what it defines.
type Document struct {
	Data    []byte
	Objects []config.Object
}

// Accepted splits data into YAML documents (at "---" lines, as pilot's decoder does) and keeps
// those that decode and validate on their own and define nothing an earlier kept document
// defines. The objects of the kept documents are what pilot serves when each document is a
// file of its own, in order.
func Accepted(data []byte) []Document {
	var (
		out  []Document
		seen = map[string]bool{}
	)
	for _, doc := range SplitDocuments(data) {
		objs, err := config.Parse("input.yaml", doc)
		if err != nil || len(objs) == 0 {
			continue
		}
		keys := make([]string, len(objs))
		for i, o := range objs {
			keys[i] = config.KindOf(o) + " " + o.GetNamespace() + "/" + o.GetName()
		}
		if slices.ContainsFunc(keys, func(k string) bool { return seen[k] }) {
			continue // the loader rejects the later of two files that define one object
		}
		for _, k := range keys {
			seen[k] = true
		}
		out = append(out, Document{Data: doc, Objects: objs})
	}
	return out
}

// Objects is every object of docs, in order.
func Objects(docs []Document) []config.Object {
	var out []config.Object
	for _, d := range docs {
		out = append(out, d.Objects...)
	}
	return out
}

// SplitDocuments cuts a multi-document YAML file at its "---" lines. Text after "---" on the
// same line starts the next document, as in pilot's decoder.
func SplitDocuments(data []byte) [][]byte {
	var (
		docs    [][]byte
		current []byte
	)
	for line := range bytes.Lines(data) {
		rest, ok := bytes.CutPrefix(line, []byte("---"))
		if ok && (len(bytes.TrimSpace(rest)) == 0 || rest[0] == ' ' || rest[0] == '\t') {
			docs = append(docs, current)
			current = append([]byte(nil), bytes.TrimLeft(rest, " \t")...)
			continue
		}
		current = append(current, line...)
	}
	return append(docs, current)
}

// ProxyHeader reads the proxy a golden input is written for, from its first line
// `# proxy: NODE_ID [none|redirect] [labels=k=v,k2=v2]` (see pkg/translate's golden test).
// ok is false when the input has no such line.
func ProxyHeader(data []byte) (nodeID, interception string, labels map[string]string, ok bool) {
	first, _, _ := bytes.Cut(data, []byte("\n"))
	rest, found := bytes.CutPrefix(first, []byte("# proxy:"))
	fields := strings.Fields(string(rest))
	if !found || len(fields) == 0 {
		return "", "", nil, false
	}
	nodeID, interception = fields[0], "redirect"
	if len(fields) > 1 {
		interception = fields[1]
	}
	if len(fields) > 2 {
		spec, _ := strings.CutPrefix(fields[2], "labels=")
		labels = map[string]string{}
		for kv := range strings.SplitSeq(spec, ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = v
		}
	}
	return nodeID, interception, labels, true
}
