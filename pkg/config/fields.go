package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// prepareSpec checks a spec's JSON against its message type and rewrites it into the form
// protojson accepts. It returns the JSON to decode, or the path of the first problem, such as
// "spec.http[0].route[0].destination.hots", and the problem.
//
// protojson rejects the same mistakes, but only with a position in the JSON converted from
// YAML, which means nothing to the author of the file; this walk names the field instead. It
// finds unknown fields, values of the wrong shape (a string where a list belongs), unknown enum
// names, integers out of range and two members of one oneof. It also rejects the protobuf names
// of fields (export_to for exportTo), which protojson accepts but the Kubernetes API server
// does not: the CRD schemas only have the JSON names, so Skiff would otherwise accept files
// that kubectl refuses.
//
// Durations are rewritten from Go syntax ("500ms", "1m30s"), which Istio and the CRD schemas
// accept, to the seconds protojson requires ("0.500000000s"). What the walk lets through is
// still decoded, and so checked, by protojson.
func prepareSpec(js []byte, md protoreflect.MessageDescriptor) ([]byte, string, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return js, "", nil // not JSON protojson can read either; it says why
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, "spec", errors.New("must be an object")
	}
	w := &specWalker{}
	if err := w.walk(md, obj, "spec"); err != nil {
		var pe *pathError
		if errors.As(err, &pe) {
			return nil, pe.path, pe.err
		}
		return nil, "spec", err
	}
	if !w.rewritten {
		return js, "", nil
	}
	out, err := json.Marshal(v)
	if err != nil {
		return js, "", nil
	}
	return out, "", nil
}

const durationType = "google.protobuf.Duration"

type specWalker struct {
	rewritten bool // a duration was rewritten, so the JSON must be encoded again
}

// walk checks the fields of one message. Errors are *pathError, with the full path.
func (w *specWalker) walk(md protoreflect.MessageDescriptor, obj map[string]any, path string) error {
	fields := md.Fields()
	oneofs := map[protoreflect.FullName]string{} // the field set in each oneof
	for _, key := range sortedKeys(obj) {
		child := path + "." + key
		fd := fields.ByJSONName(key)
		if fd == nil {
			if alt := fields.ByName(protoreflect.Name(key)); alt != nil {
				return errorAt(child, "unknown field %q (did you mean %q?)", key, alt.JSONName())
			}
			return errorAt(child, "unknown field %q", key)
		}
		val := obj[key]
		if val == nil {
			continue // protojson takes null as "not set"
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if other, set := oneofs[od.FullName()]; set {
				return errorAt(child, "cannot be set together with %q: only one of %s may be set", other, oneofNames(od))
			}
			oneofs[od.FullName()] = key
		}
		var err error
		switch {
		case fd.IsList():
			list, ok := val.([]any)
			if !ok {
				return errorAt(child, "must be a list")
			}
			for i := range list {
				if list[i], err = w.value(fd, list[i], fmt.Sprintf("%s[%d]", child, i)); err != nil {
					return err
				}
			}
		case fd.IsMap():
			m, ok := val.(map[string]any)
			if !ok {
				return errorAt(child, "must be a map")
			}
			for _, k := range sortedKeys(m) {
				if m[k], err = w.value(fd.MapValue(), m[k], child+"["+k+"]"); err != nil {
					return err
				}
			}
		default:
			if obj[key], err = w.value(fd, val, child); err != nil {
				return err
			}
		}
	}
	return nil
}

// value checks one value of a field (one element, for lists and maps) at path, and returns
// it, rewritten if it is a duration. Errors are *pathError, with the full path.
func (w *specWalker) value(fd protoreflect.FieldDescriptor, v any, path string) (any, error) {
	if v == nil {
		// walk skips null fields; a null list element or map value is an error in protojson.
		return v, errorAt(path, "must not be null")
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		md := fd.Message()
		switch {
		case md.FullName() == durationType:
			d, err := w.duration(v)
			if err != nil {
				return v, &pathError{path: path, err: err}
			}
			return d, nil
		case strings.HasPrefix(string(md.FullName()), "google.protobuf."):
			return v, nil // wrappers and Struct have JSON forms protojson checks itself
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return v, errorAt(path, "must be an object")
		}
		return v, w.walk(md, obj, path)
	case protoreflect.StringKind, protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			return v, errorAt(path, "must be a string")
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			return v, errorAt(path, "must be true or false")
		}
	case protoreflect.EnumKind:
		switch e := v.(type) {
		case string:
			if fd.Enum().Values().ByName(protoreflect.Name(e)) == nil {
				return v, errorAt(path, "unknown value %q: must be one of %s", e, enumNames(fd.Enum()))
			}
		case json.Number: // checked against the enum by Validate
		default:
			return v, errorAt(path, "must be one of %s", enumNames(fd.Enum()))
		}
	default: // numbers, which protojson also accepts quoted
		var text string
		switch n := v.(type) {
		case string:
			text = n
		case json.Number:
			text = n.String()
		default:
			return v, errorAt(path, "must be a number")
		}
		if err := checkRange(fd.Kind(), text); err != nil {
			return v, &pathError{path: path, err: err}
		}
	}
	return v, nil
}

// pathError is a problem with the field at path.
type pathError struct {
	path string
	err  error
}

func (e *pathError) Error() string { return e.path + ": " + e.err.Error() }

func errorAt(path, format string, args ...any) error {
	return &pathError{path: path, err: fmt.Errorf(format, args...)}
}

// duration rewrites a duration in Go syntax ("1m30s") to protojson's ("90.000000000s").
func (w *specWalker) duration(v any) (any, error) {
	s, ok := v.(string)
	if !ok {
		return v, errors.New(`must be a duration such as "5s" or "100ms"`)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return v, fmt.Errorf(`invalid duration %q: use a number and a unit, such as "5s" or "100ms"`, s)
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	w.rewritten = true
	return fmt.Sprintf("%s%d.%09ds", sign, d/time.Second, d%time.Second), nil
}

// checkRange rejects integers that do not fit their field, which protojson would reject
// without saying where. Other malformed numbers are left to protojson.
func checkRange(kind protoreflect.Kind, text string) error {
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		if _, uerr := strconv.ParseUint(text, 10, 64); uerr == nil && kind != protoreflect.Uint64Kind && kind != protoreflect.Fixed64Kind {
			return fmt.Errorf("%s is out of range", text)
		}
		return nil
	}
	switch kind {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if n < math.MinInt32 || n > math.MaxInt32 {
			return fmt.Errorf("%d is out of range for a 32-bit integer", n)
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if n < 0 {
			return fmt.Errorf("%d: must not be negative", n)
		}
		if n > math.MaxUint32 {
			return fmt.Errorf("%d is out of range for a 32-bit unsigned integer", n)
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if n < 0 {
			return fmt.Errorf("%d: must not be negative", n)
		}
	}
	return nil
}

func oneofNames(od protoreflect.OneofDescriptor) string {
	fields := od.Fields()
	names := make([]string, fields.Len())
	for i := range fields.Len() {
		names[i] = fields.Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	values := ed.Values()
	names := make([]string, values.Len())
	for i := range values.Len() {
		names[i] = string(values.Get(i).Name())
	}
	return strings.Join(names, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
