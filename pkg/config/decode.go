package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// DefaultNamespace is the namespace of objects that do not name one, as with kubectl.
const DefaultNamespace = "default"

// decoded is an object with the index of the document it came from.
type decoded struct {
	obj Object
	doc int
}

// Decode strictly decodes a multi-document YAML file into objects, without validating them.
// file is used only in errors. Empty and comment-only documents are skipped. Unknown fields
// anywhere (top level, metadata or spec) are errors, as are unsupported kinds. The objects of the
// documents that decoded are returned even when others failed; the error, if any, is an
// *ErrorList with one *Error per failed document.
func Decode(file string, data []byte) ([]Object, error) {
	entries, errs := decodeFile(file, data)
	return objectsOf(entries), joinErrors(errs)
}

// Parse decodes a file as Decode does, validates every object (see Validate), and rejects two
// objects of the same kind, namespace and name in the file. This is what the Loader applies to
// each file; the error, if any, is an *ErrorList.
func Parse(file string, data []byte) ([]Object, error) {
	entries, errs := parseFile(file, data)
	return objectsOf(entries), joinErrors(errs)
}

func objectsOf(entries []decoded) []Object {
	out := make([]Object, len(entries))
	for i, e := range entries {
		out[i] = e.obj
	}
	return out
}

// parseFile is Parse keeping document indexes, which the Loader needs for its messages.
func parseFile(file string, data []byte) ([]decoded, []*Error) {
	entries, errs := decodeFile(file, data)
	seen := map[string]int{}
	for _, e := range entries {
		for _, ve := range validate(e.obj) {
			ve.File, ve.Doc = file, e.doc
			errs = append(errs, ve)
		}
		key := objectKey(e.obj)
		if first, dup := seen[key]; dup {
			errs = append(errs, objectError(file, e.doc, e.obj, "metadata.name",
				fmt.Errorf("duplicate %s: also defined in document %d", key, first)))
			continue
		}
		seen[key] = e.doc
	}
	return entries, errs
}

// objectKey is "KIND NAMESPACE/NAME", unique within a Set.
func objectKey(o Object) string {
	return KindOf(o) + " " + o.GetNamespace() + "/" + o.GetName()
}

func objectError(file string, doc int, o Object, field string, err error) *Error {
	return &Error{File: file, Doc: doc, Kind: KindOf(o), Namespace: o.GetNamespace(), Name: o.GetName(), Field: field, Err: err}
}

func decodeFile(file string, data []byte) ([]decoded, []*Error) {
	var (
		out  []decoded
		errs []*Error
	)
	for _, d := range splitDocuments(data) {
		objs, derrs := decodeDocument(d)
		for _, err := range derrs {
			err.File, err.Doc = file, d.index
			errs = append(errs, err)
		}
		for _, obj := range objs {
			out = append(out, decoded{obj: obj, doc: d.index})
		}
	}
	return out, errs
}

// envelope is the top level of a document. Status is accepted so that objects copied from a
// cluster (kubectl get -o yaml) load, and then ignored: it is the server's to write.
type envelope struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   json.RawMessage `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
	Status     json.RawMessage `json:"status"`
}

// decodeDocument decodes one document: nothing for an empty document, the items of a v1 List,
// or one object. The returned errors have File and Doc unset.
func decodeDocument(d rawDocument) ([]Object, []*Error) {
	if isBlank(d.data) {
		return nil, nil
	}
	js, err := yaml.YAMLToJSONStrict(d.data)
	if err != nil {
		return nil, []*Error{{Err: fmt.Errorf("invalid YAML: %s", fileLines(strings.Join(strings.Fields(err.Error()), " "), d.line))}}
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return nil, nil // "~", or only a document end marker
	}
	if !isList(js) {
		obj, e := decodeObject(js)
		if e != nil {
			return nil, []*Error{e}
		}
		return []Object{obj}, nil
	}
	items, e := listItems(js)
	if e != nil {
		return nil, []*Error{e}
	}
	var (
		objs []Object
		errs []*Error
	)
	for i, item := range items {
		obj, e := decodeObject(bytes.TrimSpace(item))
		if e != nil {
			e.Field = strings.TrimSuffix(fmt.Sprintf("items[%d].%s", i, e.Field), ".")
			errs = append(errs, e)
			continue
		}
		objs = append(objs, obj)
	}
	return objs, errs
}

// decodeObject decodes one object from its JSON.
func decodeObject(js []byte) (Object, *Error) {
	if len(js) == 0 || js[0] != '{' {
		return nil, &Error{Err: errors.New("document is not a YAML mapping (an object with apiVersion, kind, metadata and spec)")}
	}
	if isKubeKind(js) {
		return decodeKube(js) // Kubernetes types, not Istio specs; see kube.go
	}
	var env envelope
	if e := strictUnmarshal(js, &env); e != nil {
		// Say which object it was, as far as the document tells.
		e.Kind = env.Kind
		e.Namespace, e.Name = looseIdentity(env.Metadata)
		return nil, e
	}
	if env.APIVersion == "" || env.Kind == "" {
		return nil, &Error{Kind: env.Kind, Err: errors.New("apiVersion and kind are required")}
	}
	info, err := lookupKind(env.APIVersion, env.Kind)
	if err != nil {
		ns, name := looseIdentity(env.Metadata)
		return nil, &Error{Kind: env.Kind, Namespace: ns, Name: name, Field: "apiVersion", Err: err}
	}
	obj, spec := info.newObject()
	obj.GetObjectKind().SetGroupVersionKind(schema.GroupVersionKind{Group: info.group, Version: info.versions[0], Kind: env.Kind})

	// The client-go types embed metav1.ObjectMeta, which hands out a pointer to itself.
	meta := obj.(metav1.ObjectMetaAccessor).GetObjectMeta().(*metav1.ObjectMeta)
	if !isNull(env.Metadata) {
		if e := strictUnmarshal(env.Metadata, meta); e != nil {
			e.Kind = env.Kind
			e.Namespace, e.Name = looseIdentity(env.Metadata)
			e.Field = "metadata"
			return nil, e
		}
	}
	if meta.Namespace == "" {
		meta.Namespace = DefaultNamespace
	}

	if !isNull(env.Spec) {
		if err := decodeSpec(env.Spec, spec); err != nil {
			return nil, &Error{Kind: env.Kind, Namespace: meta.Namespace, Name: meta.Name, Field: err.field, Err: err.err}
		}
	}
	return obj, nil
}

// strictUnmarshal decodes JSON into v the way the Kubernetes API server does: field names are
// case-sensitive, and unknown or duplicate fields are errors.
func strictUnmarshal(data []byte, v any) *Error {
	strict, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return &Error{Err: err}
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return &Error{Err: errors.New(strings.Join(msgs, "; "))}
	}
	return nil
}

// looseIdentity reads namespace and name from metadata that may not decode strictly, so that
// errors can still say which object they are about.
func looseIdentity(meta []byte) (namespace, name string) {
	var m struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	if isNull(meta) || kjson.UnmarshalCaseSensitivePreserveInts(meta, &m) != nil {
		return "", ""
	}
	if m.Namespace == "" && m.Name != "" {
		m.Namespace = DefaultNamespace
	}
	return m.Namespace, m.Name
}

func isNull(js []byte) bool {
	js = bytes.TrimSpace(js)
	return len(js) == 0 || string(js) == "null"
}

// specError is a spec decoding problem with the field it is about.
type specError struct {
	field string
	err   error
}

// protoPrefix and protoPosition match the "proto:" start and the "(line 1:23)" positions of
// protojson errors: the position is in the JSON converted from YAML, which means nothing to the
// author of the file.
var (
	protoPrefix   = regexp.MustCompile(`^proto:[ \x{00a0}]*`)
	protoPosition = regexp.MustCompile(`[ \x{00a0}]*\(line \d+:\d+\)`)
)

// decodeSpec fills spec from its JSON. prepareSpec finds unknown fields first, so that the error
// can name the full field path, and rewrites durations; protojson then does the decoding
// itself, rejecting wrong types and unknown enum names.
func decodeSpec(js []byte, spec proto.Message) *specError {
	js, field, err := prepareSpec(js, spec.ProtoReflect().Descriptor())
	if err != nil {
		return &specError{field: field, err: err}
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, spec); err != nil {
		return &specError{field: "spec", err: errors.New(cleanProtoError(err))}
	}
	return nil
}

func cleanProtoError(err error) string {
	msg := protoPrefix.ReplaceAllString(err.Error(), "")
	msg = protoPosition.ReplaceAllString(msg, "")
	return strings.TrimLeft(msg, ": \u00a0")
}

// rawDocument is one "---"-separated document of a file.
type rawDocument struct {
	index int    // 0-based, counting empty documents
	line  int    // 1-based line of the file where the document's text starts
	data  []byte // the document's text
}

// splitDocuments splits a YAML stream at "---" lines. Splitting by hand, rather than with a
// streaming YAML decoder, keeps going after a document with a syntax error, so that one
// typo reports one error and the other documents are still checked. A comment-only preamble
// before the first separator is not a document, so files that start with "---" count their
// first object as document 0.
func splitDocuments(data []byte) []rawDocument {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	var (
		docs    []rawDocument
		current []byte
		start   = 1
		sawSep  bool
	)
	flush := func(next int) {
		docs = append(docs, rawDocument{index: len(docs), line: start, data: current})
		current, start = nil, next
	}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		if rest, ok := separator(line); ok {
			if !sawSep && isBlank(current) {
				current, start = nil, lineNo+1 // the preamble is not a document
			} else {
				flush(lineNo + 1)
			}
			sawSep = true
			if len(rest) > 0 {
				// Content after "---" on the same line belongs to the next document.
				current, start = append(current, rest...), lineNo
			}
			continue
		}
		current = append(current, line...)
	}
	if !sawSep || !isBlank(current) {
		flush(0)
	}
	return docs
}

// separator reports whether line is a document separator, "---" alone or followed by white
// space, and returns what follows it on the line.
func separator(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, []byte("---"))
	if !ok {
		return nil, false
	}
	if len(bytes.TrimSpace(rest)) == 0 {
		return nil, true
	}
	if rest[0] != ' ' && rest[0] != '\t' {
		return nil, false // "----" or "---foo" is content
	}
	return append(bytes.TrimSpace(rest), '\n'), true
}

// isBlank reports whether a document has nothing but white space and comments.
func isBlank(doc []byte) bool {
	for line := range bytes.Lines(doc) {
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return false
		}
	}
	return true
}

// yamlLine matches the line number in YAML parser errors, which count from the start of the
// document; fileLines rewrites it to count from the start of the file.
var yamlLine = regexp.MustCompile(`\bline (\d+)`)

func fileLines(msg string, docLine int) string {
	if docLine <= 1 {
		return msg
	}
	return yamlLine.ReplaceAllStringFunc(msg, func(m string) string {
		n, err := strconv.Atoi(m[len("line "):])
		if err != nil {
			return m
		}
		return "line " + strconv.Itoa(n+docLine-1)
	})
}
