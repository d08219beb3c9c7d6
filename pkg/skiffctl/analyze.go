package skiffctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/skiffmesh/skiff/pkg/config"
	"github.com/skiffmesh/skiff/pkg/kube"
	"github.com/skiffmesh/skiff/pkg/model"
)

// Level is an analysis message's severity, as istioctl analyze's.
type Level int

// The levels, from least to most severe.
const (
	Info Level = iota
	Warning
	Error
)

func (l Level) String() string { return [...]string{"Info", "Warning", "Error"}[l] }

// ParseLevel reads a level name (case-insensitive), for --failure-threshold and
// --output-threshold.
func ParseLevel(s string) (Level, error) {
	for l := Info; l <= Error; l++ {
		if strings.EqualFold(s, l.String()) {
			return l, nil
		}
	}
	return 0, fmt.Errorf("level %q: want Info, Warning or Error", s)
}

// MarshalText writes the level's name in JSON and YAML output.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Message is one problem analyze reports: a configuration error pilot rejects the object
// (or file) for, or a warning about configuration that loads but does not do what it says.
type Message struct {
	Level Level  `json:"level"`
	Code  string `json:"code,omitempty"`
	// Kind, Namespace and Name identify the object; File and Document where it was read, in
	// folder mode.
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	File      string `json:"file,omitempty"`
	Document  *int   `json:"document,omitempty"`
	Field     string `json:"field,omitempty"`
	Message   string `json:"message"`
	// Parse marks a file that could not be read as configuration at all (istioctl counts those
	// apart: exit code 65 rather than 79).
	Parse bool `json:"-"`
}

// CodeSchemaValidation is Istio's code for an object its validation rejects (IST0106,
// SchemaValidationError): pilot's validation errors carry it.
const CodeSchemaValidation = "IST0106"

// istioErrorCodes are the warning codes Istio's messages.yaml rates Error; Skiff's own codes
// (SKF) are warnings: the object is served, without the part they name.
var istioErrorCodes = map[string]bool{
	model.CodeReferencedResourceNotFound:            true,
	model.CodeConflictingMeshGatewayVirtualServices: true,
	model.CodeConflictingGateways:                   true,
	model.CodeInvalidGatewayCredential:              true,
}

// Analyze is every message for a configuration as pilot would load it: the errors of the
// loader or API server source, then the snapshot's warnings.
func Analyze(set *config.Set, errs []*config.Error) []Message {
	var out []Message
	for _, e := range errs {
		m := Message{Level: Error, Code: CodeSchemaValidation, Kind: e.Kind, Namespace: e.Namespace, Name: e.Name,
			File: e.File, Field: e.Field, Message: e.Error()}
		if e.Err != nil {
			m.Message = e.Err.Error()
		}
		if e.Doc >= 0 {
			doc := e.Doc
			m.Document = &doc
		}
		if e.Kind == "" && e.Name == "" {
			m.Parse, m.Code = true, ""
		}
		out = append(out, m)
	}
	for _, w := range model.Build(set).Warnings() {
		level := Warning
		if istioErrorCodes[w.Code] {
			level = Error
		}
		out = append(out, Message{Level: level, Code: w.Code, Kind: w.Kind, Namespace: w.Namespace, Name: w.Name,
			Field: w.Field, Message: w.Message})
	}
	return out
}

// AnalyzeFolder loads dir with the loader pilot uses for --config-dir and analyzes it.
func AnalyzeFolder(dir string) []Message {
	set, errs := config.NewLoader(dir).Load()
	return Analyze(set, errs)
}

// AnalyzeCluster reads the configuration from the API server as pilot's Kubernetes source
// does (the same informers and validation) and analyzes it.
func AnalyzeCluster(ctx context.Context, clients *kube.Clients, log *slog.Logger) ([]Message, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type loaded struct {
		set  *config.Set
		errs []*config.Error
	}
	first := make(chan loaded, 1)
	source := kube.NewSource(clients, kube.Options{Logger: log, Quiet: time.Millisecond, MaxDelay: 10 * time.Millisecond,
		OnChange: func(set *config.Set, errs []*config.Error, _ time.Time) {
			select {
			case first <- loaded{set, errs}:
			default:
			}
		}})
	done := make(chan error, 1)
	go func() { done <- source.Run(ctx) }()
	select {
	case l := <-first:
		cancel()
		<-done
		return Analyze(l.set, l.errs), nil
	case err := <-done:
		if err == nil {
			err = errors.New("the source stopped before its first load")
		}
		return nil, fmt.Errorf("reading the cluster's configuration: %w", err)
	case <-ctx.Done():
		return nil, fmt.Errorf("reading the cluster's configuration: %w", ctx.Err())
	}
}

// PrintMessages prints messages as istioctl analyze's log format does:
//
//	Error [IST0101] (VirtualService bookinfo/reviews examples/x.yaml document 0) spec.http[0]...: message
func PrintMessages(w io.Writer, messages []Message) {
	for _, m := range messages {
		code := ""
		if m.Code != "" {
			code = " [" + m.Code + "]"
		}
		var where []string
		if m.Kind != "" || m.Name != "" {
			id := m.Name
			if m.Namespace != "" {
				id = m.Namespace + "/" + m.Name
			}
			where = append(where, strings.TrimSpace(m.Kind+" "+id))
		}
		if m.File != "" {
			f := m.File
			if m.Document != nil {
				f += fmt.Sprintf(" document %d", *m.Document)
			}
			where = append(where, f)
		}
		loc := ""
		if len(where) > 0 {
			loc = " (" + strings.Join(where, " ") + ")"
		}
		field := ""
		if m.Field != "" {
			field = m.Field + ": "
		}
		fmt.Fprintf(w, "%s%s%s %s%s\n", m.Level, code, loc, field, m.Message)
	}
}

// Exit codes, istioctl's (istioctl/cmd/sysexits.go).
const (
	ExitFileParseError      = 65 // a file could not be read as configuration
	ExitAnalyzerFoundIssues = 79 // messages at or above --failure-threshold
)

// ExitCode is analyze's exit code for messages: istioctl's rule, where issues at or above the
// failure threshold win over files that could not be parsed.
func ExitCode(messages []Message, failure Level) int {
	parse := false
	for _, m := range messages {
		if m.Level >= failure && !m.Parse {
			return ExitAnalyzerFoundIssues
		}
		parse = parse || m.Parse
	}
	if parse {
		return ExitFileParseError
	}
	return 0
}
