package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The schema checkers walk a document (decoded generically) alongside the Go
// type, or protobuf descriptor, it is meant to decode into, and report every
// unknown field and every value of the wrong type, each at its full path.
//
// Decoders report only the first problem, and without a path when it comes
// from a custom UnmarshalJSON (every Istio spec type has one). The checkers
// exist to turn that into a complete list of errors a user can act on.
// They run only when decoding failed, except for Istio kinds: Istio's own
// decoder ignores unknown fields, so there the checker is the only thing
// that notices a misspelt field.

// decodeGeneric decodes JSON keeping numbers as written.
func decodeGeneric(js []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

var (
	intOrStringType     = reflect.TypeFor[intstr.IntOrString]()
	quantityType        = reflect.TypeFor[resource.Quantity]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	protoMessageType    = reflect.TypeFor[protoreflect.ProtoMessage]()
)

// checkGo reports where v (a generically decoded JSON value) does not fit t.
func checkGo(v any, t reflect.Type, p *fieldPath, e *errs) {
	if v == nil {
		return // null is the zero value for every Go type
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(protoMessageType) {
		md := reflect.New(t).Interface().(protoreflect.ProtoMessage).ProtoReflect().Descriptor()
		checkProto(v, md, p, e)
		return
	}
	if t == intOrStringType {
		switch v.(type) {
		case string, json.Number:
		default:
			e.add(p, typeMismatch("integer or string", v))
			return
		}
	}
	if t == quantityType {
		switch x := v.(type) {
		case string:
			if _, err := resource.ParseQuantity(x); err != nil {
				e.add(p, fmt.Sprintf(`invalid quantity %q: want a number with an optional suffix, e.g. "500m", "128Mi", "2"`, x))
			}
			return
		case json.Number:
			return
		default:
			e.add(p, typeMismatch("quantity", v))
			return
		}
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshalerType) {
		// Custom decoding (resource.Quantity, intstr.IntOrString, metav1.Time):
		// run it on just this value, which gives its error a path.
		js, err := json.Marshal(v)
		if err == nil {
			err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(js)
		}
		if err != nil {
			e.add(p, cleanDecodeError(err, v))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			e.add(p, typeMismatch("object", v))
			return
		}
		info := structInfo(t)
		for _, k := range sortedKeys(m) {
			f, ok := info.fields[k]
			if !ok {
				e.add(p.childOrRoot(k), unknownField(k, info.names))
				continue
			}
			checkGo(m[k], f, p.childOrRoot(k), e)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			e.add(p, typeMismatch("object", v))
			return
		}
		for _, k := range sortedKeys(m) {
			if msg := checkGoMapKey(k, t.Key()); msg != "" {
				e.add(p.key(k), msg)
				continue
			}
			checkGo(m[k], t.Elem(), p.key(k), e)
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			s, ok := v.(string)
			if !ok {
				e.add(p, typeMismatch("base64 string", v))
			} else if _, err := base64.StdEncoding.DecodeString(s); err != nil {
				e.add(p, "invalid base64: "+err.Error())
			}
			return
		}
		l, ok := v.([]any)
		if !ok {
			e.add(p, typeMismatch("list", v))
			return
		}
		for i, x := range l {
			checkGo(x, t.Elem(), p.at(i), e)
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			e.add(p, typeMismatch("string", v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			e.add(p, typeMismatch("boolean", v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			e.add(p, typeMismatch("integer", v))
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			e.add(p, intError(string(n), t.Bits(), false))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			e.add(p, typeMismatch("integer", v))
			return
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			e.add(p, intError(string(n), t.Bits(), true))
		}
	case reflect.Float32, reflect.Float64:
		if _, ok := v.(json.Number); !ok {
			e.add(p, typeMismatch("number", v))
		}
	case reflect.Interface:
		// anything goes
	}
}

// childOrRoot lets the checkers start from a nil path (the document root).
func (p *fieldPath) childOrRoot(name string) *fieldPath {
	if p == nil {
		return newPath(name)
	}
	return p.child(name)
}

func checkGoMapKey(k string, t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if _, err := strconv.ParseInt(k, 10, t.Bits()); err != nil {
			return fmt.Sprintf("map key %q is not an integer", k)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if _, err := strconv.ParseUint(k, 10, t.Bits()); err != nil {
			return fmt.Sprintf("map key %q is not an unsigned integer", k)
		}
	}
	return ""
}

type goStruct struct {
	fields map[string]reflect.Type // JSON name -> field type
	names  []string                // JSON names, for suggestions
}

var structCache sync.Map // reflect.Type -> *goStruct

// structInfo lists the JSON fields of a struct as encoding/json sees them:
// embedded structs without a name are flattened into their parent.
func structInfo(t reflect.Type) *goStruct {
	if s, ok := structCache.Load(t); ok {
		return s.(*goStruct)
	}
	s := &goStruct{fields: map[string]reflect.Type{}}
	var add func(t reflect.Type, depth int)
	add = func(t reflect.Type, depth int) {
		var embedded []reflect.Type
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					embedded = append(embedded, ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := s.fields[name]; !dup { // shallower fields win
				s.fields[name] = f.Type
				s.names = append(s.names, name)
			}
		}
		if depth < 8 {
			for _, et := range embedded {
				add(et, depth+1)
			}
		}
	}
	add(t, 0)
	slices.Sort(s.names)
	structCache.Store(t, s)
	return s
}

// checkProto reports where v does not fit the protobuf message md, following
// the rules of the JSON decoder Istio uses (github.com/golang/protobuf/jsonpb):
// fields by JSON or proto name, quoted or bare integers, durations in Go
// syntax ("1m", "100ms"), enums by name or number.
func checkProto(v any, md protoreflect.MessageDescriptor, p *fieldPath, e *errs) {
	if v == nil {
		return
	}
	switch md.FullName() {
	case "google.protobuf.Duration":
		s, ok := v.(string)
		if !ok {
			e.add(p, typeMismatch(`duration (e.g. "5s")`, v))
		} else if _, err := time.ParseDuration(s); err != nil {
			e.add(p, fmt.Sprintf(`invalid duration %q: use a number and a unit, e.g. "10s", "1.5s", "100ms" or "1m"`, s))
		}
		return
	case "google.protobuf.Timestamp":
		s, ok := v.(string)
		if !ok {
			e.add(p, typeMismatch("RFC 3339 timestamp", v))
		} else if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			e.add(p, fmt.Sprintf("invalid timestamp %q: want RFC 3339, e.g. 2006-01-02T15:04:05Z", s))
		}
		return
	case "google.protobuf.Struct":
		if _, ok := v.(map[string]any); !ok {
			e.add(p, typeMismatch("object", v))
		}
		return
	case "google.protobuf.ListValue":
		if _, ok := v.([]any); !ok {
			e.add(p, typeMismatch("list", v))
		}
		return
	case "google.protobuf.Value", "google.protobuf.Any":
		return
	case "google.protobuf.FieldMask":
		if _, ok := v.(string); !ok {
			e.add(p, typeMismatch("string", v))
		}
		return
	case "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
		"google.protobuf.Int64Value", "google.protobuf.UInt64Value",
		"google.protobuf.Int32Value", "google.protobuf.UInt32Value",
		"google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue":
		checkProtoScalar(v, md.Fields().ByNumber(1), p, e)
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		e.add(p, typeMismatch("object", v))
		return
	}
	fields := md.Fields()
	seen := map[protoreflect.FieldNumber]string{}
	oneofs := map[protoreflect.FullName]string{}
	for _, k := range sortedKeys(m) {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		fp := p.childOrRoot(k)
		if fd == nil {
			e.add(fp, unknownField(k, protoFieldNames(md)))
			continue
		}
		if prev, dup := seen[fd.Number()]; dup {
			e.add(fp, fmt.Sprintf("set twice, as %q and %q", prev, k))
			continue
		}
		seen[fd.Number()] = k
		val := m[k]
		if val == nil {
			continue // jsonpb treats null as unset
		}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			if prev, set := oneofs[od.FullName()]; set {
				e.add(fp, fmt.Sprintf("only one of %s may be set, found %q and %q", oneofNames(od), prev, k))
				continue
			}
			oneofs[od.FullName()] = k
		}
		switch {
		case fd.IsList():
			l, ok := val.([]any)
			if !ok {
				e.add(fp, typeMismatch("list", val))
				continue
			}
			for i, x := range l {
				checkProtoSingular(x, fd, fp.at(i), e)
			}
		case fd.IsMap():
			mm, ok := val.(map[string]any)
			if !ok {
				e.add(fp, typeMismatch("object", val))
				continue
			}
			kfd := fd.MapKey()
			for _, mk := range sortedKeys(mm) {
				if kfd.Kind() != protoreflect.StringKind {
					var ke errs
					checkProtoScalar(mk, kfd, fp.key(mk), &ke)
					if len(ke) > 0 {
						e.add(fp.key(mk), fmt.Sprintf("map key %q must be %s", mk, protoKindName(kfd)))
						continue
					}
				}
				checkProtoSingular(mm[mk], fd.MapValue(), fp.key(mk), e)
			}
		default:
			checkProtoSingular(val, fd, fp, e)
		}
	}
}

func checkProtoSingular(v any, fd protoreflect.FieldDescriptor, p *fieldPath, e *errs) {
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		checkProto(v, fd.Message(), p, e)
		return
	}
	checkProtoScalar(v, fd, p, e)
}

func checkProtoScalar(v any, fd protoreflect.FieldDescriptor, p *fieldPath, e *errs) {
	if v == nil {
		return
	}
	// jsonpb strips the quotes from numbers ("80" is 80); so do we.
	num := func() (string, bool) {
		switch x := v.(type) {
		case json.Number:
			return string(x), true
		case string:
			return x, true
		}
		return "", false
	}
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			e.add(p, typeMismatch("boolean", v))
		}
	case protoreflect.StringKind:
		if _, ok := v.(string); !ok {
			e.add(p, typeMismatch("string", v))
		}
	case protoreflect.BytesKind:
		s, ok := v.(string)
		if !ok {
			e.add(p, typeMismatch("base64 string", v))
		} else if _, err := base64.StdEncoding.DecodeString(s); err != nil {
			e.add(p, "invalid base64: "+err.Error())
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		bits := 64
		if k := fd.Kind(); k == protoreflect.Int32Kind || k == protoreflect.Sint32Kind || k == protoreflect.Sfixed32Kind {
			bits = 32
		}
		s, ok := num()
		if !ok {
			e.add(p, typeMismatch("integer", v))
		} else if _, err := strconv.ParseInt(s, 10, bits); err != nil {
			if _, isStr := v.(string); isStr && !looksNumeric(s) {
				e.add(p, typeMismatch("integer", v))
			} else {
				e.add(p, intError(s, bits, false))
			}
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		bits := 64
		if k := fd.Kind(); k == protoreflect.Uint32Kind || k == protoreflect.Fixed32Kind {
			bits = 32
		}
		s, ok := num()
		if !ok {
			e.add(p, typeMismatch("integer", v))
		} else if _, err := strconv.ParseUint(s, 10, bits); err != nil {
			if _, isStr := v.(string); isStr && !looksNumeric(s) {
				e.add(p, typeMismatch("integer", v))
			} else {
				e.add(p, intError(s, bits, true))
			}
		}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		s, ok := num()
		if !ok {
			e.add(p, typeMismatch("number", v))
		} else if _, err := strconv.ParseFloat(s, 64); err != nil && s != "NaN" && s != "Infinity" && s != "-Infinity" {
			e.add(p, typeMismatch("number", v))
		}
	case protoreflect.EnumKind:
		ed := fd.Enum()
		switch x := v.(type) {
		case string:
			if ed.Values().ByName(protoreflect.Name(x)) == nil {
				e.add(p, fmt.Sprintf("invalid value %q: must be one of %s", x, enumNames(ed)))
			}
		case json.Number:
			if _, err := strconv.ParseInt(string(x), 10, 32); err != nil {
				e.add(p, fmt.Sprintf("invalid value %s: must be one of %s", x, enumNames(ed)))
			}
		default:
			e.add(p, typeMismatch("one of "+enumNames(ed), v))
		}
	}
}

func looksNumeric(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func protoKindName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return "true or false"
	case protoreflect.StringKind:
		return "a string"
	default:
		return "an integer"
	}
}

func enumNames(ed protoreflect.EnumDescriptor) string {
	vals := ed.Values()
	names := make([]string, vals.Len())
	for i := range vals.Len() {
		names[i] = string(vals.Get(i).Name())
	}
	return strings.Join(names, ", ")
}

func oneofNames(od protoreflect.OneofDescriptor) string {
	fs := od.Fields()
	names := make([]string, fs.Len())
	for i := range fs.Len() {
		names[i] = fs.Get(i).JSONName()
	}
	return strings.Join(names, ", ")
}

var protoNamesCache sync.Map // protoreflect.FullName -> []string

func protoFieldNames(md protoreflect.MessageDescriptor) []string {
	if n, ok := protoNamesCache.Load(md.FullName()); ok {
		return n.([]string)
	}
	fs := md.Fields()
	names := make([]string, 0, fs.Len())
	for i := range fs.Len() {
		names = append(names, fs.Get(i).JSONName())
	}
	slices.Sort(names)
	protoNamesCache.Store(md.FullName(), names)
	return names
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describe names a JSON value for "expected X, got Y" messages.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + strconv.Quote(truncate(x, 40))
	case json.Number:
		return "number " + string(x)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case map[string]any:
		return "object"
	case []any:
		return "list"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// typeMismatch says what was expected and what was found, and for the
// mistakes YAML makes easy, how to fix it.
func typeMismatch(want string, got any) string {
	msg := "expected " + want + ", got " + describe(got)
	switch g := got.(type) {
	case bool:
		if want == "string" {
			msg += " (YAML reads unquoted true/false, yes/no, on/off and y/n as booleans; quote the value)"
		}
	case json.Number:
		if want == "string" {
			msg += " (quote the value to make it a string)"
		}
	case string:
		if want == "integer" || want == "number" {
			if looksNumeric(g) {
				msg += " (remove the quotes)"
			}
		}
	case []any:
		if want == "object" {
			msg += ` (remove the leading "- ")`
		}
	case map[string]any:
		if want == "list" {
			msg += ` (list items start with "- ")`
		}
	}
	return msg
}

func intError(s string, bits int, unsigned bool) string {
	if _, err := strconv.ParseFloat(s, 64); err == nil && strings.ContainsAny(s, ".eE") {
		return "expected integer, got number " + s
	}
	if unsigned && strings.HasPrefix(s, "-") {
		return "must not be negative, got " + s
	}
	if unsigned {
		return fmt.Sprintf("%s is out of range (max %d)", s, uint64(1)<<bits-1)
	}
	return fmt.Sprintf("%s is out of range for a %d-bit integer", s, bits)
}

// unknownField phrases an unknown-field error with a suggestion when the
// key is close to a known one (wrong case, snake_case, a typo).
func unknownField(k string, known []string) string {
	if s := suggest(k, known); s != "" {
		return fmt.Sprintf("unknown field %q (did you mean %q?)", k, s)
	}
	return fmt.Sprintf("unknown field %q", k)
}

func suggest(k string, known []string) string {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	nk := norm(k)
	for _, c := range known {
		if norm(c) == nk {
			return c
		}
	}
	best, bestD := "", 3
	if len(k) <= 4 {
		bestD = 2
	}
	for _, c := range known {
		if d := levenshtein(nk, norm(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// cleanDecodeError turns a custom unmarshaler's error into a message for a
// value whose path is already known.
func cleanDecodeError(err error, v any) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "json: ")
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return typeMismatch(goTypeName(te.Type), v)
	}
	return fmt.Sprintf("invalid value %s: %s", describeValue(v), msg)
}

func describeValue(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(truncate(s, 40))
	}
	return describe(v)
}

func goTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "list"
	default:
		return "object"
	}
}
