package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/occupancyd/occupancyd/occupancy"
)

// topologyFile is a topology read from its own file (topology.file): JSON with the
// schema of the inline topology (occupancy.TopologyConfig's json tags), unknown keys
// refused. encoding/json decodes a 100,000-DPU campus several times faster than
// yaml.v3 builds the node tree of the same topology inline (and yaml.v3 needs 350 MB
// for that tree, too much to spend at a reload just to place an error). The list
// elements are decoded one by one from a stream, so that the offset of each is
// known for the lines of validation problems; an element encoding/json refuses is
// explained key by key by the config's decoder (JSON is YAML), so that it is
// reported with every problem, its key paths and lines, while the others still
// decode.
type topologyFile struct {
	topology occupancy.TopologyConfig
	name     string // as written in the config
	data     []byte
	starts   map[string][]int64 // offset of each element of each list
	problems []Problem
	broken   bool  // not a JSON topology: nothing to validate
	newlines []int // offsets of the line breaks, for line (built on first use)
}

// LoadTopology reads a topology file (topology.file) on its own, for tools: the
// topology as decoded (not validated), and a *ConfigError listing every problem of
// the file's decoding.
func LoadTopology(path string) (occupancy.TopologyConfig, error) {
	tf, err := readTopologyFile(path, path)
	if err != nil {
		return occupancy.TopologyConfig{}, fmt.Errorf("topology.file: %w", err)
	}
	if len(tf.problems) > 0 {
		return tf.topology, &ConfigError{Problems: tf.problems}
	}
	return tf.topology, nil
}

func readTopologyFile(path, name string) (*topologyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	data := make([]byte, st.Size()) // one allocation: 14 MB at 100,000 DPUs
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, err
	}
	return decodeTopology(data, name), nil
}

// decodeTopology decodes the topology file data, named name in problems.
func decodeTopology(data []byte, name string) *topologyFile {
	tf := &topologyFile{name: name, data: data, starts: map[string][]int64{}}
	tf.decode()
	return tf
}

func (tf *topologyFile) problem(path string, off int64, format string, args ...any) {
	tf.problems = append(tf.problems, Problem{File: tf.name, Path: path, Message: fmt.Sprintf(format, args...), Line: tf.line(off)})
}

// fail records a problem that leaves the rest of the file unread.
func (tf *topologyFile) fail(dec *json.Decoder, err error) bool {
	tf.broken = true
	off, msg := dec.InputOffset(), "want a JSON object with spaces, doorways and dpus"
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		off, msg = se.Offset, "invalid JSON: "+se.Error()
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		msg = "invalid JSON: unexpected end of file"
	}
	tf.problem("", off, "%s", msg)
	return false
}

func (tf *topologyFile) decode() {
	dec := json.NewDecoder(bytes.NewReader(tf.data))
	dec.DisallowUnknownFields()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		tf.fail(dec, err)
		return
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			tf.fail(dec, err)
			return
		}
		key, _ := tok.(string)
		off := dec.InputOffset()
		ok := true
		switch {
		case key == "spaces":
			ok = decodeList(tf, dec, key, &tf.topology.Spaces)
		case key == "doorways":
			ok = decodeList(tf, dec, key, &tf.topology.Doorways)
		case key == "dpus":
			ok = decodeList(tf, dec, key, &tf.topology.DPUs)
		default:
			tf.problem(key, off, "unknown key%s", suggestKey(key, topologyKeys))
			ok = skipValue(dec) == nil
		}
		if !ok {
			return
		}
	}
	if _, err := dec.Token(); err != nil { // '}'
		tf.fail(dec, err)
	} else if _, err := dec.Token(); err != io.EOF {
		tf.problem("", dec.InputOffset(), "more after the topology object")
	}
}

// decodeList decodes the list under key element by element; false when the file
// cannot be read further.
func decodeList[T any](tf *topologyFile, dec *json.Decoder, key string, out *[]T) bool {
	off := dec.InputOffset()
	tok, err := dec.Token()
	*out, tf.starts[key] = nil, nil // a key given twice: the last counts, as in encoding/json
	switch {
	case err != nil:
		return tf.fail(dec, err)
	case tok == nil:
		return true // null: none
	case tok != json.Delim('['):
		tf.problem(key, off, "want a list, got %s", jsonKind(bytes.TrimLeft(tf.data[off:], separators)))
		tf.broken = true // read no further
		return false
	}
	for i := 0; dec.More(); i++ {
		off := dec.InputOffset()
		tf.starts[key] = append(tf.starts[key], off)
		var v T
		var se *json.SyntaxError
		if err := dec.Decode(&v); errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
			return tf.fail(dec, err)
		} else if err != nil {
			v = explain[T](tf, key+"["+strconv.Itoa(i)+"]", off, dec.InputOffset(), err)
		}
		*out = append(*out, v)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return tf.fail(dec, err)
	}
	return true
}

// explain reports what is wrong with the element at data[from:to] that encoding/json
// refused with err: every problem, found by the config's decoder, which decodes what
// it can of the element; encoding/json's own message when the decoder finds nothing
// (a fraction for an integer: yaml.v3 truncates it).
func explain[T any](tf *topologyFile, path string, from, to int64, err error) (v T) {
	var doc yaml.Node
	d := decoder{jsonFile: tf.name, lineBase: tf.line(from) - 1}
	if yaml.Unmarshal(bytes.TrimLeft(tf.data[from:to], separators), &doc) == nil && len(doc.Content) == 1 {
		d.decode(doc.Content[0], reflect.ValueOf(&v).Elem(), path)
	}
	if len(d.problems) == 0 {
		tf.problem(path, from, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	tf.problems = append(tf.problems, d.problems...)
	return v
}

// skipValue reads past the next value.
func skipValue(dec *json.Decoder) error {
	var raw json.RawMessage
	return dec.Decode(&raw)
}

// jsonKind names the kind of the JSON value that raw starts with.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	} else if k, ok := jsonKinds[raw[0]]; ok {
		return k
	}
	return "a number"
}

var (
	jsonKinds    = map[byte]string{'{': "an object", '[': "a list", '"': "a string", 't': "true or false", 'f': "true or false", 'n': "null"}
	topologyKeys = map[string]int{"spaces": 0, "doorways": 1, "dpus": 2} // of the topology file
)

// separators may stand between an offset the decoder reports and the value there.
const separators = " \t\r\n,:"

// line is the line of the value at or after offset off (past separators).
func (tf *topologyFile) line(off int64) int {
	for off < int64(len(tf.data)) && strings.IndexByte(separators, tf.data[off]) >= 0 {
		off++
	}
	if tf.newlines == nil {
		tf.newlines = []int{}
		for i, c := range tf.data {
			if c == '\n' {
				tf.newlines = append(tf.newlines, i)
			}
		}
	}
	return sort.SearchInts(tf.newlines, int(off)) + 1
}

// lineOf is the line of the list element a problem path (e.g. "dpus[3].plus_space")
// is about; 0 if none.
func (tf *topologyFile) lineOf(path string) int {
	key, rest, ok := strings.Cut(path, "[")
	idx, _, _ := strings.Cut(rest, "]")
	i, err := strconv.Atoi(idx)
	if !ok || err != nil || i < 0 || i >= len(tf.starts[key]) {
		return 0
	}
	return tf.line(tf.starts[key][i])
}
