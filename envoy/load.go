package envoy

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"gopkg.in/yaml.v3"
)

var (
	// ErrSyntax reports a configuration Envoy would not parse: bad YAML, an unknown field, an unknown @type, an
	// enum value name that does not exist, a value of the wrong type.
	ErrSyntax = errors.New("envoy config does not parse")
	// ErrInvalid reports a configuration that parses but breaks a rule of Envoy's API (its protoc-gen-validate
	// constraints), or holds an enum number Envoy does not define.
	ErrInvalid = errors.New("envoy config is invalid")
	// ErrDeprecated reports a field or enum value Envoy has deprecated: it warns today and refuses it later.
	ErrDeprecated = errors.New("envoy config uses a deprecated field")
)

// Load parses an Envoy bootstrap written in YAML (or JSON) and checks it as strictly as Envoy does at start, and
// more: every message packed in a typed_config is parsed and validated too, and deprecated fields are refused.
// Errors wrap ErrSyntax, ErrInvalid or ErrDeprecated.
func Load(data []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yamlToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, b); err != nil {
		return nil, fmt.Errorf("%w%s: %w", ErrSyntax, sourceLine(data, err), err)
	}
	if err := Validate(b); err != nil {
		return nil, err
	}
	return b, nil
}

// Validate checks m against Envoy's validation rules, and with it every message packed in a google.protobuf.Any
// inside m, recursively. ValidateAll on m alone stops at each Any: it never looks inside a typed_config, which
// is where the ext_authz filter, the connection manager and the TLS contexts live. All problems are reported,
// each with the path of the field; they wrap ErrInvalid or ErrDeprecated, or ErrSyntax for an Any whose type is
// not linked in.
func Validate(m proto.Message) error {
	var errs []error
	validateTree(m.ProtoReflect(), "", &errs)
	return errors.Join(errs...)
}

// unpacked calls fn with every message packed in a google.protobuf.Any inside m, at any depth, and with its path;
// it stops at the first error fn returns. An Any that does not unpack is skipped: Validate reports it.
func unpacked(m proto.Message, fn func(path string, msg proto.Message) error) error {
	return unpackedAt(m.ProtoReflect(), "", fn)
}

func unpackedAt(m protoreflect.Message, prefix string, fn func(string, proto.Message) error) error {
	var err error
	walk(m, prefix, func(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		inner, uerr := unpack(fd, v)
		if uerr != nil || inner == nil {
			return true
		}
		p := anyPath(path, inner)
		if err = fn(p, inner); err == nil {
			err = unpackedAt(inner.ProtoReflect(), p, fn)
		}
		return err == nil
	})
	return err
}

type allValidator interface{ ValidateAll() error }

func validateTree(m protoreflect.Message, path string, errs *[]error) {
	if v, ok := m.Interface().(allValidator); ok {
		if err := v.ValidateAll(); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w: %w", where(path), ErrInvalid, err))
		}
	}
	walk(m, path, func(p string, fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			*errs = append(*errs, fmt.Errorf("%s: %w: %s", where(p), ErrDeprecated, fd.FullName()))
		}
		if fd.Kind() == protoreflect.EnumKind {
			checkEnum(p, fd, v, errs)
		}
		inner, err := unpack(fd, v)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w: %w", where(p), ErrSyntax, err))
		} else if inner != nil {
			validateTree(inner.ProtoReflect(), anyPath(p, inner), errs)
		}
		return true
	})
}

func checkEnum(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value, errs *[]error) {
	ev := fd.Enum().Values().ByNumber(v.Enum())
	if ev == nil {
		*errs = append(*errs, fmt.Errorf("%s: %w: %d is not a value of %s", where(path), ErrInvalid, v.Enum(), fd.Enum().FullName()))
		return
	}
	if opts, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && opts.GetDeprecated() {
		*errs = append(*errs, fmt.Errorf("%s: %w: %s", where(path), ErrDeprecated, ev.FullName()))
	}
}

const anyName protoreflect.FullName = "google.protobuf.Any"

// unpack returns the message inside v when fd holds a google.protobuf.Any, and nil otherwise.
func unpack(fd protoreflect.FieldDescriptor, v protoreflect.Value) (proto.Message, error) {
	if fd.Message() == nil || fd.Message().FullName() != anyName {
		return nil, nil
	}
	a, ok := v.Message().Interface().(*anypb.Any)
	if !ok {
		return nil, nil
	}
	return a.UnmarshalNew()
}

// anyPath names an unpacked message in error paths: typed_config<ExtAuthz>.
func anyPath(path string, inner proto.Message) string {
	return path + "<" + string(inner.ProtoReflect().Descriptor().Name()) + ">"
}

// walk calls fn with every set field of m and of the messages below it, lists and maps included, with its
// path. Each element of a list or map is passed on its own. fn returning false stops the walk below that value;
// a google.protobuf.Any is not entered (its value is bytes until unpacked).
func walk(m protoreflect.Message, path string, fn func(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) bool) bool {
	cont := true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := join(path, string(fd.Name()))
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len() && cont; i++ {
				cont = visit(p+"["+strconv.Itoa(i)+"]", fd, l.Get(i), fn)
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				cont = visit(p+"["+strconv.Quote(k.String())+"]", fd.MapValue(), mv, fn)
				return cont
			})
		default:
			cont = visit(p, fd, v, fn)
		}
		return cont
	})
	return cont
}

func visit(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value, fn func(string, protoreflect.FieldDescriptor, protoreflect.Value) bool) bool {
	if !fn(path, fd, v) {
		return false
	}
	if fd.Message() == nil || fd.Message().FullName() == anyName {
		return true
	}
	return walk(v.Message(), path, fn)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func where(path string) string {
	if path == "" {
		return "bootstrap"
	}
	return path
}

// protojsonToken finds what protojson could not place: an unknown field or @type. Its offsets count in the JSON
// form of the file, which helps no one editing the YAML.
var protojsonToken = regexp.MustCompile(`(?:unknown field|unable to resolve) "([^"]+)"`)

// sourceLine returns ": yaml line N" for the first line of data that holds the token err complains about, or "".
func sourceLine(data []byte, err error) string {
	m := protojsonToken.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	for i, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, m[1]) {
			return fmt.Sprintf(": yaml line %d", i+1)
		}
	}
	return ""
}

// yamlToJSON converts one YAML document to JSON for protojson, which is what Envoy does with a YAML bootstrap.
func yamlToJSON(data []byte) ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	v, err := jsonValue(doc, "")
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// jsonValue turns what yaml.v3 decodes into values encoding/json accepts: mappings need string keys.
func jsonValue(v any, path string) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			c, err := jsonValue(e, join(path, k))
			if err != nil {
				return nil, err
			}
			v[k] = c
		}
		return v, nil
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("%s: mapping key %v is not a string", where(path), k)
			}
			c, err := jsonValue(e, join(path, ks))
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []any:
		for i, e := range v {
			c, err := jsonValue(e, path+"["+strconv.Itoa(i)+"]")
			if err != nil {
				return nil, err
			}
			v[i] = c
		}
		return v, nil
	default:
		return v, nil
	}
}
