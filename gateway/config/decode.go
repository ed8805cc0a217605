package config

import (
	"bytes"
	"encoding"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/occupancy"
)

// decoder decodes the yaml.v3 node tree of a config file into Config field by field
// (yaml.v3's own strict decoding, KnownFields, names Go types instead of key paths,
// a bad value by its line and first 7 characters, and ends at the first error of a
// value's own UnmarshalText, without a line), so that every unknown key and every
// value of the wrong type is reported with its key path and line, and the rest of
// the file still decodes. It also explains a list element of the JSON topology file that
// encoding/json refused (topology.go), in the words of JSON.
type decoder struct {
	problems []Problem
	root     *yaml.Node          // the document's top mapping, for lineOf
	active   map[*yaml.Node]bool // anchored nodes being decoded: an alias back to one is a cycle
	steps    int                 // aliases expanded so far, bounded against alias bombs
	file     *string             // Config.TopologyFile, set by topology.file
	jsonFile string              // the JSON file being explained ("": YAML)
	lineBase int                 // added to node lines (a JSON element's first line - 1)
}

// nodeDecoder is a config type with a YAML shape of its own (EventsTopics: one entry
// or a list), decoding itself and reporting through d.
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node, path string)
}

// maxAliasSteps bounds the work of expanding aliases and merge keys.
const maxAliasSteps = 100_000

var (
	topologyType    = reflect.TypeFor[occupancy.TopologyConfig]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	nodeDecoderType = reflect.TypeFor[nodeDecoder]()
)

func (d *decoder) problem(path string, line int, format string, args ...any) {
	d.problems = append(d.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...), Line: d.lineBase + line, File: d.jsonFile})
}

// document decodes data over cfg; false when data is not one YAML document.
func (d *decoder) document(data []byte, cfg *Config) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, extra yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return true // empty file: all defaults
		}
		d.problems = append(d.problems, syntaxProblem(err))
		return false
	}
	if err := dec.Decode(&extra); err == nil {
		d.problem("", extra.Line, "a second YAML document: a config file holds one")
		return false
	} else if !errors.Is(err, io.EOF) {
		d.problems = append(d.problems, syntaxProblem(err))
		return false
	}
	root := &doc
	if len(root.Content) == 0 {
		return true
	}
	root = root.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return true
	}
	if root.Kind != yaml.MappingNode {
		d.problem("", root.Line, "want a mapping of keys (gateway, mqtt, storage, engine, http, health, log, topology), got %s", d.describe(root))
		return false
	}
	d.root, d.file = root, &cfg.TopologyFile
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	return true
}

// syntaxProblem turns "yaml: line 3: mapping values are not allowed ..." into a
// Problem with its line.
func syntaxProblem(err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d: ", &line); n == 1 {
		msg = msg[strings.Index(msg, ": ")+2:]
	}
	return Problem{Message: "invalid YAML: " + msg, Line: line}
}

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
		if d.steps++; d.steps == maxAliasSteps {
			d.problem(path, n.Line, "too many aliases and merge keys to expand")
		}
	}
	if d.steps >= maxAliasSteps {
		return
	}
	if n.Anchor != "" { // only an anchored node can be reached again through an alias
		if d.active[n] {
			d.problem(path, n.Line, "an alias refers to the mapping it is in")
			return
		}
		if d.active == nil {
			d.active = map[*yaml.Node]bool{}
		}
		d.active[n] = true
		defer delete(d.active, n)
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // key present without a value: keep the default
	}
	t := v.Type()
	switch {
	case reflect.PointerTo(t).Implements(nodeDecoderType):
		v.Addr().Interface().(nodeDecoder).decodeNode(d, n, path)
	case t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		p := reflect.New(t.Elem()) // a mapping such as a DPU's map: decoded key by key
		d.decode(n, p.Elem(), path)
		v.Set(p)
	case t.Kind() == reflect.Struct && !reflect.PointerTo(t).Implements(textUnmarshaler):
		d.decodeStruct(n, v, path)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			d.problem(path, n.Line, "want a list, got %s", d.describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case t.Kind() == reflect.String && n.Kind == yaml.ScalarNode && n.Tag != "!!binary":
		if d.jsonFile != "" && n.Style != yaml.DoubleQuotedStyle {
			d.problem(path, n.Line, "want a string, got %s", d.describe(n))
			return
		}
		v.SetString(n.Value) // as yaml sets any other scalar, without a decoder per value
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64 && n.ShortTag() == "!!float" &&
		!reflect.PointerTo(t).Implements(textUnmarshaler) && (d.jsonFile != "" || !whole(n.Value)):
		// yaml.v3 would truncate 1.5 to 1; JSON (encoding/json) takes no 10.0 either.
		d.problem(path, n.Line, "want %s, got %s", typeName(t), d.describe(n))
	default:
		// Through yaml, into a copy so a bad value leaves the default in place.
		tmp := reflect.New(t)
		switch err := n.Decode(tmp.Interface()).(type) { // yaml.v3 returns its errors unwrapped
		case nil:
			v.Set(tmp.Elem())
		case *yaml.TypeError:
			d.problem(path, n.Line, "want %s, got %s", typeName(t), d.describe(n))
		default:
			d.problem(path, n.Line, "%v", err) // the value's own UnmarshalText
		}
	}
}

// whole reports whether the YAML float f is a whole number.
func whole(f string) bool {
	x, err := strconv.ParseFloat(f, 64)
	return err == nil && x == math.Trunc(x)
}

// typeName says what a value of type t is written as.
func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return `a duration such as "90s", "5m" or "2160h"`
	case reflect.PointerTo(t).Implements(textUnmarshaler):
		return "a scalar"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	}
	return t.String()
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.problem(path, n.Line, "want %s, got %s", d.words("a mapping of keys", "an object"), d.describe(n))
		return
	}
	fields := yamlFields(v.Type())
	// Merge keys (<<: *anchor) first, so that explicit keys override them.
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Value == "<<" && k.Tag == "!!merge" {
			m := deref(n.Content[i+1])
			if m.Kind != yaml.SequenceNode {
				d.decode(m, v, path)
				continue
			}
			for _, c := range m.Content {
				d.decode(c, v, path)
			}
		}
	}
	var file, inline *yaml.Node // topology.file and the first inline list beside it
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			continue
		}
		p := joinPath(path, k.Value)
		idx, ok := fields[k.Value]
		switch {
		case !ok || k.Kind != yaml.ScalarNode:
			d.problem(p, k.Line, "unknown key%s", suggestKey(k.Value, fields))
		case idx < 0: // topology.file
			file = k
			d.decode(val, reflect.ValueOf(d.file).Elem(), p)
		default:
			if inline == nil && v.Type() == topologyType {
				inline = k
			}
			d.decode(val, v.Field(idx), p)
		}
	}
	if file != nil && inline != nil {
		d.problem("topology.file", file.Line, "set beside topology.%s: the topology is inline or in a file, not both", inline.Value)
	}
}

// decodeNode reads one entry or a list of them, each a topic filter or a mapping
// {filter, kind, map}; each bad element is reported with its index.
func (l *EventsTopics) decodeNode(d *decoder, n *yaml.Node, path string) {
	entry := func(c *yaml.Node, path string) (EventsTopic, bool) {
		switch c = deref(c); {
		case c.Kind == yaml.ScalarNode && c.Tag != "!!null":
			return EventsTopic{Filter: c.Value}, true
		case c.Kind == yaml.MappingNode:
			var e EventsTopic
			d.decode(c, reflect.ValueOf(&e).Elem(), path)
			return e, true
		}
		d.problem(path, c.Line, "want a topic filter or {filter, kind, map}, got %s", d.describe(c))
		return EventsTopic{}, false
	}
	if n.Kind != yaml.SequenceNode {
		if e, ok := entry(n, path); ok {
			*l = EventsTopics{e}
		}
		return
	}
	out := EventsTopics{}
	for i, c := range n.Content {
		if e, ok := entry(c, path+"["+strconv.Itoa(i)+"]"); ok {
			out = append(out, e)
		}
	}
	*l = out
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// describe says what n is, for "want ..., got ..." (a scalar quoted but for a JSON
// number, true, false or null).
func (d *decoder) describe(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.MappingNode:
		return d.words("a mapping", "an object")
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode && d.jsonFile != "" && n.Style != yaml.DoubleQuotedStyle:
		return n.Value
	case n.Kind == yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

// words is the YAML or the JSON word for a thing.
func (d *decoder) words(yamlWord, jsonWord string) string {
	if d.jsonFile != "" {
		return jsonWord
	}
	return yamlWord
}

// yamlFields maps the yaml key of each field of a struct type to its index; the
// topology also has the key "file" (index -1).
func yamlFields(t reflect.Type) map[string]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string]int)
	}
	m := make(map[string]int, t.NumField()+1)
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "-" && t.Field(i).IsExported() {
			m[name] = i
		}
	}
	if t == topologyType {
		m["file"] = -1
	}
	fieldCache.Store(t, m)
	return m
}

var fieldCache sync.Map // reflect.Type -> map[string]int (yamlFields)

// suggestKey returns ` (did you mean "x"?)` for a near miss, listing the valid keys
// otherwise.
func suggestKey(key string, fields map[string]int) string {
	best, bestD := "", 3
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
		if dist := editDistance(strings.ToLower(key), name); dist < bestD || (dist == bestD && name < best) {
			best, bestD = name, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sort.Strings(names)
	return " (want one of " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
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

// lineOf returns the line of path (e.g. "topology.dpus[3].plus_space") in the file:
// of its key, or of the nearest ancestor present; 0 if none. It walks the document
// rather than keeping a line for every key, which a 100,000-DPU file would make costly.
func (d *decoder) lineOf(path string) int {
	n, line := d.root, 0
	if path == "" || n == nil {
		return 0
	}
	for _, seg := range strings.Split(path, ".") {
		key, rest, _ := strings.Cut(seg, "[")
		if n = deref(n); n.Kind == yaml.SequenceNode && len(n.Content) == 1 {
			n = n.Content[0] // a list of one is named as its element (mqtt.events_topic.kind)
		}
		k, v := lookupKey(deref(n), key)
		if k == nil {
			return line
		}
		n, line = v, k.Line
		for rest != "" {
			idx, tail, _ := strings.Cut(rest, "]")
			rest = strings.TrimPrefix(tail, "[")
			n = deref(n)
			i, err := strconv.Atoi(idx)
			if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		}
	}
	return line
}

// lookupKey returns the key and value nodes of key in mapping n; nil if absent (or
// only merged in: the mapping's line is near enough).
func lookupKey(n *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}
