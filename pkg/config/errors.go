package config

import (
	"fmt"
	"strings"
)

// Error is a problem with one configuration file, one document in it, or one field of one
// object. It is the only error type this package reports for bad input, so callers can list
// problems uniformly and tools can point at the exact place.
type Error struct {
	// File is the path of the file (or of the folder, for a folder that cannot be read).
	File string
	// Doc is the 0-based index of the YAML document in File, or -1 when the error concerns the
	// file as a whole. A comment-only preamble before the first "---" is not a document.
	Doc int
	// Kind, Namespace and Name identify the object, as far as they are known.
	Kind, Namespace, Name string
	// Field is the path of the offending field, such as "spec.http[0].route[1].weight", or
	// empty when the problem is not with one field.
	Field string
	// Err is the underlying problem.
	Err error
}

// Error renders the error as
//
//	FILE: document N (KIND NAMESPACE/NAME): FIELD: PROBLEM
//
// leaving out the parts that are not known.
func (e *Error) Error() string {
	if e == nil {
		return "<nil>"
	}
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
	}
	if e.File != "" {
		b.WriteString(e.File)
	}
	if e.Doc >= 0 {
		sep()
		fmt.Fprintf(&b, "document %d", e.Doc)
		if id := e.object(); id != "" {
			fmt.Fprintf(&b, " (%s)", id)
		}
	} else if id := e.object(); id != "" {
		sep()
		b.WriteString(id)
	}
	if e.Field != "" {
		sep()
		b.WriteString(e.Field)
	}
	sep()
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	} else {
		b.WriteString("invalid")
	}
	return b.String()
}

// object is "KIND NAMESPACE/NAME" with whatever parts are known.
func (e *Error) object() string {
	id := e.Name
	if e.Namespace != "" && e.Name != "" {
		id = e.Namespace + "/" + e.Name
	}
	switch {
	case e.Kind != "" && id != "":
		return e.Kind + " " + id
	case e.Kind != "":
		return e.Kind
	default:
		return id
	}
}

// Unwrap returns the underlying problem, for errors.Is and errors.As.
func (e *Error) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

// joinErrors turns a list of problems into one error value for APIs that return error, keeping
// each *Error reachable through errors.As and the Unwrap() []error method.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	return &ErrorList{Errors: errs}
}

// ErrorList is several *Error values returned as one error, one per line.
type ErrorList struct {
	Errors []*Error
}

// Error lists every problem, one per line.
func (l *ErrorList) Error() string {
	lines := make([]string, len(l.Errors))
	for i, e := range l.Errors {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes each *Error to errors.Is and errors.As.
func (l *ErrorList) Unwrap() []error {
	out := make([]error, len(l.Errors))
	for i, e := range l.Errors {
		out[i] = e
	}
	return out
}

// Errors extracts the *Error values from an error returned by this package: the list inside an
// *ErrorList, or the single *Error. It returns nil for any other error.
func Errors(err error) []*Error {
	switch e := err.(type) {
	case *ErrorList:
		return e.Errors
	case *Error:
		return []*Error{e}
	}
	return nil
}
