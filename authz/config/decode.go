package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decode fills out from the YAML document in data. Unlike yaml.v3's KnownFields mode, errors carry the full key
// path (jwt.issuers[0].audiences), which is what an operator searches the file for.
func decode(data []byte, file string, out *Config) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if doc.Kind == 0 { // empty file
		return nil
	}
	d := decoder{file: file}
	d.value(doc.Content[0], reflect.ValueOf(out).Elem(), "")
	return errors.Join(d.errs...)
}

type decoder struct {
	file string
	errs []error
}

func (d *decoder) fail(n *yaml.Node, key, format string, args ...any) {
	if key == "" {
		key = "(top level)"
	}
	d.errs = append(d.errs, fmt.Errorf("%s:%d: %s: %s", d.file, n.Line, key, fmt.Sprintf(format, args...)))
}

var durationType = reflect.TypeFor[Duration]()

func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an explicit null leaves the default
	}
	if v.Type() == durationType {
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "want a duration such as 30s")
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.fail(n, key, "want a duration such as 30s (got %q)", n.Value)
			return
		}
		v.SetInt(int64(dur))
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		// A pointer tells an absent key (nil: the default applies) from an explicit zero value.
		p := reflect.New(v.Type().Elem())
		d.value(n, p.Elem(), key)
		v.Set(p)
	case reflect.Struct:
		d.mapping(n, v, key)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, key, "want a list, got %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
			d.fail(n, key, "want a string, got %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			d.fail(n, key, "want true or false, got %s", kindName(n))
			return
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			d.fail(n, key, "want an integer, got %s", kindName(n))
			return
		}
		i, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil {
			d.fail(n, key, "want an integer (got %q)", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.Tag != "!!float" && n.Tag != "!!int") {
			d.fail(n, key, "want a number, got %s", kindName(n))
			return
		}
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			d.fail(n, key, "want a finite number (got %q)", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		panic("config: unsupported field kind " + v.Kind().String())
	}
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, key, "want a mapping, got %s", kindName(n))
		return
	}
	fields := map[string]int{}
	t := v.Type()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = i
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		sub := k.Value
		if key != "" {
			sub = key + "." + k.Value
		}
		idx, ok := fields[k.Value]
		switch {
		case !ok:
			d.fail(k, sub, "unknown key")
		case seen[k.Value]:
			d.fail(k, sub, "duplicate key")
		default:
			seen[k.Value] = true
			d.value(val, v.Field(idx), sub)
		}
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.Tag {
	case "!!str":
		return fmt.Sprintf("a string (%q)", n.Value)
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return n.Tag
}
