package config

import (
	"errors"
	"strconv"
	"strings"

	"github.com/ambit-mesh/ambit/internal/model"
)

// Error is one problem found in a manifest. Every field that is known is
// filled in, so that a user can go straight to the offending line; the
// fields are also exported so that tools (an editor integration, `ambit
// analyze -o json`) need not parse the message.
type Error struct {
	File     string    // as given to Parse or found by Load; "" for in-memory data without a name
	Document int       // 1-based index of the YAML document in File; 0 if the error is about the whole file
	Line     int       // 1-based line in File; 0 if unknown
	Ref      model.Ref // the object, as far as it is known (Kind may be empty)
	Field    string    // path of the offending field, e.g. "spec.rules[0].backendRefs[1].weight"
	Message  string
}

// Error formats e as
//
//	file: document N: line L: Kind namespace/name: field.path: message
//
// leaving out the parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteString(": ")
		}
	}
	if e.File != "" {
		b.WriteString(e.File)
	}
	if e.Document > 0 {
		sep()
		b.WriteString("document ")
		b.WriteString(strconv.Itoa(e.Document))
	}
	if e.Line > 0 {
		sep()
		b.WriteString("line ")
		b.WriteString(strconv.Itoa(e.Line))
	}
	if r := refString(e.Ref); r != "" {
		sep()
		b.WriteString(r)
	}
	if e.Field != "" {
		sep()
		b.WriteString(e.Field)
	}
	sep()
	b.WriteString(e.Message)
	return b.String()
}

// refString is Ref.String without the trailing "/" or "ns/" a partly known
// Ref would print: errors are often about objects whose name is missing.
func refString(r model.Ref) string {
	if r.Kind == "" {
		return ""
	}
	switch {
	case r.Name == "":
		return string(r.Kind)
	case r.Namespace == "":
		return string(r.Kind) + " " + r.Name
	default:
		return string(r.Kind) + " " + r.Namespace + "/" + r.Name
	}
}

// ErrorList is every problem found by one call to Parse or Load, in file
// and document order. Its Error method prints one error per line.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual *Error values.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// err returns l as an error, or a nil error (not a nil ErrorList, which
// would compare != nil) when l is empty.
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// Errors returns the individual errors in err: the elements of an ErrorList,
// or err itself if it is a single *Error. It returns nil for other errors.
func Errors(err error) []*Error {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	var e *Error
	if errors.As(err, &e) {
		return []*Error{e}
	}
	return nil
}
