// Package render prints protos the way Envoy's own admin output does: proto (snake_case)
// field names, Any payloads expanded with their "@type", and stable whitespace, so what Skiff
// prints can be compared line by line with Envoy's /config_dump and diffed between runs.
package render

import (
	"bytes"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// compact encodes m as JSON with Envoy's field names. protojson randomises its whitespace on
// purpose; compacting removes it so the output is byte-for-byte repeatable.
func compact(m proto.Message) ([]byte, error) {
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s as JSON: %w", proto.MessageName(m), err)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, js); err != nil {
		return nil, fmt.Errorf("compacting %s JSON: %w", proto.MessageName(m), err)
	}
	return out.Bytes(), nil
}

// JSON renders m as indented JSON, fields in proto order.
func JSON(m proto.Message) ([]byte, error) {
	js, err := compact(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, js, "", "  "); err != nil {
		return nil, fmt.Errorf("indenting %s JSON: %w", proto.MessageName(m), err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// YAML renders m as block-style YAML with sorted keys.
func YAML(m proto.Message) ([]byte, error) {
	js, err := compact(m)
	if err != nil {
		return nil, err
	}
	y, err := yaml.JSONToYAML(js)
	if err != nil {
		return nil, fmt.Errorf("converting %s to YAML: %w", proto.MessageName(m), err)
	}
	return y, nil
}
