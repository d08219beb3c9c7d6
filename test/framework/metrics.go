package framework

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text exposition format. Histogram and
// summary series appear as their own samples: name_bucket (with an "le"
// label), name_sum, name_count.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

func (s Sample) String() string {
	keys := slices.Sorted(maps.Keys(s.Labels))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, s.Labels[k])
	}
	return fmt.Sprintf("%s{%s} %v", s.Name, strings.Join(parts, ","), s.Value)
}

// ParseMetrics parses the Prometheus text exposition format (what
// client_golang serves on /metrics). It is deliberately small: comments and
// timestamps are skipped, and it is only meant for a well-formed exposition.
// It stands in for prometheus/common/expfmt so that the harness does not tie
// go.mod to that module's version (go.mod did not require it when this was
// written).
func ParseMetrics(text string) ([]Sample, error) {
	var samples []Sample
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d %q: %w", n+1, line, err)
		}
		samples = append(samples, s)
	}
	return samples, nil
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ \t")
	if i < 0 {
		return s, fmt.Errorf("no value")
	}
	s.Name, line = line[:i], line[i:]
	if strings.HasPrefix(line, "{") {
		rest, err := parseLabels(line[1:], &s)
		if err != nil {
			return s, err
		}
		line = rest
	}
	if s.Name == "" {
		return s, fmt.Errorf("no metric name")
	}
	fields := strings.Fields(line) // value, then an optional timestamp
	if len(fields) == 0 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(fields[0], 64) // accepts +Inf, -Inf, NaN
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	s.Value = v
	return s, nil
}

// parseLabels parses `a="x",b="y"}` and returns what follows the brace. A
// quoted string not followed by '=' is the metric name (the UTF-8 form
// `{"my.metric",a="x"}`).
func parseLabels(line string, s *Sample) (string, error) {
	for {
		line = strings.TrimLeft(line, " \t,")
		if line == "" {
			return "", fmt.Errorf("unterminated labels")
		}
		if line[0] == '}' {
			return line[1:], nil
		}
		var key string
		if line[0] == '"' {
			k, rest, err := unquote(line)
			if err != nil {
				return "", err
			}
			key, line = k, strings.TrimLeft(rest, " \t")
			if !strings.HasPrefix(line, "=") {
				s.Name = key
				continue
			}
		} else {
			i := strings.IndexAny(line, "= \t")
			if i < 0 {
				return "", fmt.Errorf("label without value")
			}
			key, line = line[:i], strings.TrimLeft(line[i:], " \t")
		}
		if !strings.HasPrefix(line, "=") {
			return "", fmt.Errorf("label %q: want '='", key)
		}
		value, rest, err := unquote(strings.TrimLeft(line[1:], " \t"))
		if err != nil {
			return "", fmt.Errorf("label %q: %w", key, err)
		}
		s.Labels[key] = value
		line = rest
	}
}

// unquote reads a double-quoted string with the exposition format's escapes
// (\\, \", \n) from the start of line and returns it and what follows.
func unquote(line string) (string, string, error) {
	if !strings.HasPrefix(line, `"`) {
		return "", "", fmt.Errorf("want a quoted string")
	}
	var b strings.Builder
	for i := 1; i < len(line); i++ {
		switch c := line[i]; c {
		case '"':
			return b.String(), line[i+1:], nil
		case '\\':
			i++
			if i == len(line) {
				return "", "", fmt.Errorf("unterminated string")
			}
			switch line[i] {
			case 'n':
				b.WriteByte('\n')
			default: // \\ and \"
				b.WriteByte(line[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", "", fmt.Errorf("unterminated string")
}

// sumMatching adds up the samples named name whose labels include every pair
// in labels.
func sumMatching(samples []Sample, name string, labels map[string]string) (float64, int) {
	var sum float64
	var n int
	for _, s := range samples {
		if s.Name != name || !hasLabels(s, labels) {
			continue
		}
		sum += s.Value
		n++
	}
	return sum, n
}

func hasLabels(s Sample, labels map[string]string) bool {
	for k, v := range labels {
		if got, ok := s.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
