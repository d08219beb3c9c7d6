// Package docs runs the repository's documentation as a reader would: the shell blocks of the
// README's tour and of docs/no-cluster.md, in order, with bash, from the repository's root, the
// long-running ones in the background as in terminals of their own. What a block must print,
// and which blocks start servers, stay in the background or are skipped, is said by invisible
// HTML comments placed just before the block:
//
//	<!-- doc-test: background pilot; ready http://127.0.0.1:15014/ready -->
//	<!-- doc-test: expect "reviews-v2"; expect "ratings" -->
//	<!-- doc-test: stop pilot gateway -->
//	<!-- doc-test: skip: macOS only -->
//
// Directives, separated by ";" (or in comments of their own, one after another):
//
//   - background NAME: the block keeps running (a server, an Envoy) while the following blocks
//     run, until a later block stops it or the document ends.
//   - ready URL ["TEXT"]: once the block has started (background) or finished (foreground),
//     wait until GET URL answers 2xx, and its body contains TEXT if given: the moment a reader
//     would see the server up before pasting the next block.
//   - expect "TEXT": the block's output (stdout and stderr) must contain TEXT.
//   - stop NAME...: stop those background blocks before this one runs, as the text asks.
//   - skip: REASON: the block is not run.
package docs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Block is one shell block of a document, with its directives.
type Block struct {
	File    string
	Line    int    // of the opening fence
	Section string // the "## " heading it is under
	Script  string

	Background string // NAME of a background block, "" for one that runs to its end
	Ready      []Readiness
	Expect     []string
	Stop       []string
	Skip       string // why the block is not run, "" if it is
}

// Readiness is a ready directive: an URL to GET, and optionally what its body must contain.
type Readiness struct {
	URL      string
	Contains string
}

// Where names the block in messages.
func (b *Block) Where() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

const directivePrefix = "<!-- doc-test:"

// ParseFile reads the shell blocks (```sh or ```bash) of the markdown file rel under root,
// naming them by rel.
func ParseFile(root, rel string) ([]*Block, error) {
	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", rel, err)
	}
	return Parse(rel, string(data))
}

// InSections keeps the blocks under the given "## " headings, and fails if a heading has none:
// a renamed section must not leave its blocks untested.
func InSections(blocks []*Block, sections ...string) ([]*Block, error) {
	var out []*Block
	for _, section := range sections {
		n := len(out)
		for _, b := range blocks {
			if b.Section == section {
				out = append(out, b)
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("no shell blocks under the heading %q", section)
		}
	}
	slices.SortStableFunc(out, func(a, b *Block) int { return a.Line - b.Line })
	return out, nil
}

// Parse reads the shell blocks of a markdown document. A directive comment must be followed,
// after blank lines at most, by a shell block: one that drifts away from its block in an edit
// is an error, not a silently untested block.
func Parse(name, text string) ([]*Block, error) {
	var (
		blocks  []*Block
		pending *Block // directives read, waiting for their block
		current *Block // the shell block being read
		inOther bool   // inside a fence of another language
		section string
		script  strings.Builder
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case current != nil:
			if trimmed == "```" {
				current.Script = script.String()
				blocks = append(blocks, current)
				current = nil
				continue
			}
			script.WriteString(line)
			script.WriteByte('\n')
		case inOther:
			inOther = trimmed != "```"
		case strings.HasPrefix(trimmed, "```"):
			lang := strings.TrimPrefix(trimmed, "```")
			if lang != "sh" && lang != "bash" {
				if pending != nil {
					return nil, fmt.Errorf("%s:%d: doc-test directive before a %q block, not a shell block", name, pending.Line, lang)
				}
				inOther = true
				continue
			}
			current = &Block{File: name, Line: n, Section: section}
			if pending != nil {
				current.Background, current.Ready, current.Expect, current.Stop, current.Skip =
					pending.Background, pending.Ready, pending.Expect, pending.Stop, pending.Skip
				pending = nil
			}
			script.Reset()
		case strings.HasPrefix(trimmed, directivePrefix):
			if pending == nil {
				pending = &Block{File: name, Line: n}
			}
			if err := parseDirectives(pending, trimmed); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n, err)
			}
		case trimmed == "":
		default:
			if pending != nil {
				return nil, fmt.Errorf("%s:%d: doc-test directive not followed by a shell block (text at line %d)", name, pending.Line, n)
			}
			if strings.HasPrefix(line, "## ") {
				section = strings.TrimPrefix(line, "## ")
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if current != nil {
		return nil, fmt.Errorf("%s:%d: shell block not closed", name, current.Line)
	}
	if pending != nil {
		return nil, fmt.Errorf("%s:%d: doc-test directive at the end of the document", name, pending.Line)
	}
	return blocks, nil
}

// parseDirectives adds the directives of one comment line to b.
func parseDirectives(b *Block, comment string) error {
	body, ok := strings.CutSuffix(strings.TrimPrefix(comment, directivePrefix), "-->")
	if !ok {
		return fmt.Errorf("doc-test comment must end on its line with -->")
	}
	for _, d := range splitDirectives(body) {
		verb, rest, _ := strings.Cut(d, " ")
		rest = strings.TrimSpace(rest)
		switch {
		case strings.HasPrefix(d, "skip:"):
			b.Skip = strings.TrimSpace(strings.TrimPrefix(d, "skip:"))
			if b.Skip == "" {
				return fmt.Errorf("skip needs a reason")
			}
		case verb == "background":
			if rest == "" || strings.ContainsAny(rest, " \"") {
				return fmt.Errorf("background needs one NAME, got %q", rest)
			}
			b.Background = rest
		case verb == "ready":
			url, text, _ := strings.Cut(rest, " ")
			r := Readiness{URL: url}
			if text = strings.TrimSpace(text); text != "" {
				var err error
				if r.Contains, err = strconv.Unquote(text); err != nil {
					return fmt.Errorf("ready %s: the text must be a quoted string: %s", url, text)
				}
			}
			if !strings.HasPrefix(url, "http://") {
				return fmt.Errorf("ready needs an http:// URL, got %q", url)
			}
			b.Ready = append(b.Ready, r)
		case verb == "expect":
			text, err := strconv.Unquote(rest)
			if err != nil || text == "" {
				return fmt.Errorf("expect needs a quoted, non-empty string, got %s", rest)
			}
			b.Expect = append(b.Expect, text)
		case verb == "stop":
			if rest == "" {
				return fmt.Errorf("stop needs NAMEs")
			}
			b.Stop = append(b.Stop, strings.Fields(rest)...)
		default:
			return fmt.Errorf("unknown doc-test directive %q", d)
		}
	}
	return nil
}

// splitDirectives splits at the semicolons outside quoted strings.
func splitDirectives(s string) []string {
	var (
		out     []string
		quoted  bool
		escaped bool
		start   int
	)
	for i, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\' && quoted:
			escaped = true
		case r == '"':
			quoted = !quoted
		case r == ';' && !quoted:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	out = append(out, strings.TrimSpace(s[start:]))
	return slices.DeleteFunc(out, func(d string) bool { return d == "" })
}
