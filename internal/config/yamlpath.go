package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// fieldErrors turns a YAML decoding error into errors that name the field
// path, as Validate's do: yaml.v3 reports only a line number
// ("line 3: cannot unmarshal !!int `120` into time.Duration"). It walks the
// document alongside the Config type and reports, for every field, a
// duration without a unit or unknown field; any other decoder error gets
// the path of the field on its line. A document that does not even parse
// keeps the parser's error.
func fieldErrors(data []byte, decodeErr error) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("parsing: %w", decodeErr)
	}
	w := &pathWalker{lines: map[int]string{}, known: map[int]string{}, reported: map[int]bool{}}
	w.walk(&doc, reflect.TypeFor[Config](), "", 0)
	errs := w.errs
	var te *yaml.TypeError
	if errors.As(decodeErr, &te) {
		for _, msg := range te.Errors {
			line := lineOf(msg)
			if w.reported[line] && line > 0 {
				continue
			}
			if p := w.lines[line]; p != "" {
				msg = fmt.Sprintf("%s (line %d):%s", p, line, strings.TrimPrefix(msg, fmt.Sprintf("line %d:", line)))
			}
			if k := w.known[line]; k != "" && strings.Contains(msg, "not found in type") {
				msg += " (known: " + k + ")"
			}
			errs = append(errs, errors.New(msg))
		}
	} else if len(errs) == 0 {
		errs = append(errs, fmt.Errorf("parsing: %w", decodeErr))
	}
	return errors.Join(errs...)
}

var lineRE = regexp.MustCompile(`^line (\d+):`)

func lineOf(msg string) int {
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// pathWalker records the field path of every value by line, and the
// problems it can name precisely.
type pathWalker struct {
	lines    map[int]string // line -> path of the value that names it
	known    map[int]string // line -> known keys where the key is unknown
	reported map[int]bool   // lines with an error in errs
	errs     []error
}

// maxDepth bounds the walk (aliases can nest documents deeply).
const maxDepth = 32

var durationType = reflect.TypeFor[time.Duration]()

func (w *pathWalker) add(n *yaml.Node, path, format string, a ...any) {
	w.errs = append(w.errs, fmt.Errorf("%s: "+format, append([]any{path}, a...)...))
	w.reported[n.Line] = true
}

func (w *pathWalker) walk(n *yaml.Node, t reflect.Type, path string, depth int) {
	if n == nil || depth > maxDepth {
		return
	}
	// The deepest value on a line names it best: a scalar replaces the
	// mapping or sequence that starts on the same line.
	if _, ok := w.lines[n.Line]; path != "" && (!ok || n.Kind == yaml.ScalarNode) {
		w.lines[n.Line] = path
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			w.walk(c, t, path, depth+1)
		}
		return
	case yaml.AliasNode:
		w.walk(n.Alias, t, path, depth+1)
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
			if _, err := time.ParseDuration(n.Value); err != nil {
				if _, ierr := strconv.ParseFloat(n.Value, 64); ierr == nil {
					w.add(n, path, "%s: a duration needs a unit, e.g. %ss", n.Value, n.Value)
				} else {
					w.add(n, path, "%q: not a duration: use a number and a unit, e.g. 30s, 5m, 1h30m", n.Value)
				}
			}
		}
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				// The decoder reports it; name the path and the known keys.
				w.lines[k.Line] = join(path, k.Value)
				w.known[k.Line] = strings.Join(sortedKeys(fields), ", ")
				continue
			}
			w.walk(v, f, join(path, k.Value), depth+1)
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.walk(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), depth+1)
		}
	}
}

// yamlFields maps the YAML keys of a struct type to their field types, as
// yaml.v3 names them (the tag's name, else the lower-cased field name;
// "-" is not a key).
func yamlFields(t reflect.Type) map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	return m
}

func sortedKeys(m map[string]reflect.Type) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
