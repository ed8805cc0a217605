package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/occupancyd/occupancyd/gateway/httpapi"
)

// The OpenAPI description (GET /v1/openapi.json, gateway/httpapi/openapi.json) held
// to the running daemon: Main with the embedded broker and HTTP on 127.0.0.1:0, the
// demo building. Every route the server registers is described, every described
// operation answers (neither 404 "no route" nor 405) when called with the
// description's examples, with a status the description lists and a body its schema
// accepts — additionalProperties false in the schemas makes a new answer field fail
// until it is described.

const openAPIFile = "gateway/httpapi/openapi.json"

// openAPIDoc is the parsed description with the helpers the checks need.
type openAPIDoc struct {
	root  map[string]any
	paths map[string]any
}

func parseOpenAPI(t *testing.T, b []byte) *openAPIDoc {
	t.Helper()
	var root map[string]any
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatalf("%s is not JSON: %v", openAPIFile, err)
	}
	paths, _ := root["paths"].(map[string]any)
	return &openAPIDoc{root: root, paths: paths}
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// operations lists "METHOD path" of every described operation, sorted.
func (d *openAPIDoc) operations() []string {
	var ops []string
	for p, item := range d.paths {
		m, _ := item.(map[string]any)
		for _, meth := range httpMethods {
			if _, ok := m[meth]; ok {
				ops = append(ops, strings.ToUpper(meth)+" "+p)
			}
		}
	}
	sort.Strings(ops)
	return ops
}

func (d *openAPIDoc) operation(op string) map[string]any {
	meth, p, _ := strings.Cut(op, " ")
	item, _ := d.paths[p].(map[string]any)
	o, _ := item[strings.ToLower(meth)].(map[string]any)
	return o
}

// resolve follows a local $ref ("#/components/schemas/X").
func (d *openAPIDoc) resolve(ref string) (any, error) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not local (#/...)", ref)
	}
	var cur any = d.root
	for _, part := range strings.Split(rest, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: %q is not an object", ref, part)
		}
		if cur, ok = m[part]; !ok {
			return nil, fmt.Errorf("$ref %q does not resolve (no %q)", ref, part)
		}
	}
	return cur, nil
}

// patternRoute turns a net/http ServeMux pattern ("GET /v1/spaces/{id}", "GET /{$}")
// into the description's "GET /v1/spaces/{id}", "GET /".
func patternRoute(pattern string) string {
	meth, p, ok := strings.Cut(pattern, " ")
	if !ok {
		meth, p = "ANY", pattern
	}
	p = strings.ReplaceAll(p, "{$}", "")
	p = regexp.MustCompile(`\{([A-Za-z0-9_]+)\.\.\.\}`).ReplaceAllString(p, "{$1}")
	if p == "" {
		p = "/"
	}
	return meth + " " + p
}

// validate checks v against schema (the subset of JSON Schema the description uses:
// $ref, type, const, enum, properties, required, additionalProperties false, items,
// oneOf, minimum, maximum) and returns every mismatch with its JSON path. name is
// the components.schemas entry being checked, for the messages.
func (d *openAPIDoc) validate(schema any, v any, at, name string) []string {
	s, ok := schema.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s: the schema is not an object", at)}
	}
	if ref, ok := s["$ref"].(string); ok {
		target, err := d.resolve(ref)
		if err != nil {
			return []string{at + ": " + err.Error()}
		}
		return d.validate(target, v, at, strings.TrimPrefix(ref, "#/components/schemas/"))
	}
	var errs []string
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Sprintf("%s: %s (schema %s)", at, fmt.Sprintf(format, args...), name))
	}
	if alts, ok := s["oneOf"].([]any); ok {
		matched := 0
		var why []string
		for i, a := range alts {
			e := d.validate(a, v, at, name)
			if len(e) == 0 {
				matched++
			} else {
				why = append(why, fmt.Sprintf("[%d] %s", i, strings.Join(e, "; ")))
			}
		}
		if matched != 1 {
			fail("matches %d of the oneOf alternatives, want exactly 1: %s", matched, strings.Join(why, " | "))
		}
	}
	if c, ok := s["const"]; ok && !jsonEqual(c, v) {
		fail("got %v, want %v", v, c)
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return jsonEqual(e, v) }) {
		fail("%v is not one of %v", v, enum)
	}
	if ty, ok := s["type"]; ok {
		var types []string
		switch ty := ty.(type) {
		case string:
			types = []string{ty}
		case []any:
			for _, x := range ty {
				types = append(types, fmt.Sprint(x))
			}
		}
		if !slices.ContainsFunc(types, func(t string) bool { return jsonType(v, t) }) {
			fail("got %s %v, want type %s", jsonTypeName(v), truncateAny(v), strings.Join(types, " or "))
			return errs
		}
	}
	if n, ok := v.(float64); ok {
		if lo, ok := s["minimum"].(float64); ok && n < lo {
			fail("%v is below the minimum %v", n, lo)
		}
		if hi, ok := s["maximum"].(float64); ok && n > hi {
			fail("%v is above the maximum %v", n, hi)
		}
	}
	if obj, ok := v.(map[string]any); ok {
		props, _ := s["properties"].(map[string]any)
		for _, r := range asStrings(s["required"]) {
			if _, ok := obj[r]; !ok {
				fail("required field %q is missing", r)
			}
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ps, described := props[k]
			switch {
			case described:
				errs = append(errs, d.validate(ps, obj[k], at+"."+k, name)...)
			case s["additionalProperties"] == false:
				fail("field %q is in the answer but not in the schema: describe it in %s (components.schemas.%s.properties) and docs/http.md", k, openAPIFile, name)
			}
		}
	}
	if arr, ok := v.([]any); ok {
		if items, ok := s["items"]; ok {
			for i, x := range arr {
				errs = append(errs, d.validate(items, x, fmt.Sprintf("%s[%d]", at, i), name)...)
			}
		}
	}
	return errs
}

func jsonType(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		n, ok := v.(float64)
		return ok && n == math.Trunc(n)
	case "array":
		_, ok := v.([]any)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

func jsonTypeName(v any) string {
	for _, t := range []string{"null", "boolean", "integer", "number", "string", "array", "object"} {
		if jsonType(v, t) {
			return t
		}
	}
	return fmt.Sprintf("%T", v)
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func truncateAny(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

func asStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// structure checks the description on its own: an OpenAPI 3 document whose every
// $ref resolves, every operation answers something in 2xx with a description, and
// every path parameter is declared with an example the test can call it with.
func (d *openAPIDoc) structure() []string {
	var errs []string
	if v, _ := d.root["openapi"].(string); !strings.HasPrefix(v, "3.") {
		errs = append(errs, fmt.Sprintf(`"openapi" is %q, want an OpenAPI 3 version such as "3.1.0"`, v))
	}
	info, _ := d.root["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		errs = append(errs, `"info" needs "title" and "version"`)
	}
	if len(d.paths) == 0 {
		errs = append(errs, `"paths" is empty`)
	}
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				if _, err := d.resolve(ref); err != nil {
					errs = append(errs, at+": "+err.Error())
				}
			}
			for k, x := range v {
				walk(x, at+"."+k)
			}
		case []any:
			for i, x := range v {
				walk(x, fmt.Sprintf("%s[%d]", at, i))
			}
		}
	}
	walk(d.root, "$")
	for _, op := range d.operations() {
		o := d.operation(op)
		resp, _ := o["responses"].(map[string]any)
		ok2xx := false
		for code, r := range resp {
			if strings.HasPrefix(code, "2") {
				ok2xx = true
			}
			if rm, _ := r.(map[string]any); rm["description"] == nil {
				errs = append(errs, fmt.Sprintf("%s: response %s has no description", op, code))
			}
		}
		if !ok2xx {
			errs = append(errs, op+": no 2xx response")
		}
		_, p, _ := strings.Cut(op, " ")
		for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(p, -1) {
			if pp := pathParam(o, m[1]); pp == nil {
				errs = append(errs, fmt.Sprintf("%s: path parameter %q is not declared in parameters (in: path, required: true)", op, m[1]))
			} else if pp["example"] == nil {
				errs = append(errs, fmt.Sprintf("%s: path parameter %q needs an example (a real id of the demo building) for the test to call it with", op, m[1]))
			}
		}
	}
	return errs
}

func pathParam(op map[string]any, name string) map[string]any {
	ps, _ := op["parameters"].([]any)
	for _, p := range ps {
		pm, _ := p.(map[string]any)
		if pm["in"] == "path" && pm["name"] == name {
			return pm
		}
	}
	return nil
}

// request builds the call of an operation from the description's examples: path
// parameters, query parameters that have one, and the request body's.
func (d *openAPIDoc) request(op, base string) (*http.Request, error) {
	meth, p, _ := strings.Cut(op, " ")
	o := d.operation(op)
	query := url.Values{}
	ps, _ := o["parameters"].([]any)
	for _, x := range ps {
		pm, _ := x.(map[string]any)
		ex, has := pm["example"]
		if !has {
			continue
		}
		name := fmt.Sprint(pm["name"])
		switch pm["in"] {
		case "path":
			p = strings.ReplaceAll(p, "{"+name+"}", url.PathEscape(fmt.Sprint(ex)))
		case "query":
			query.Set(name, fmt.Sprint(ex))
		}
	}
	var body io.Reader
	ctype := ""
	if rb, ok := o["requestBody"].(map[string]any); ok {
		content, _ := rb["content"].(map[string]any)
		if js, ok := content["application/json"].(map[string]any); ok {
			b, err := json.Marshal(js["example"])
			if err != nil || js["example"] == nil {
				return nil, fmt.Errorf(`%s: requestBody.content."application/json" needs an example to call it with`, op)
			}
			body, ctype = bytes.NewReader(b), "application/json"
		}
	}
	u := base + p
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequest(meth, u, body)
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	return req, nil
}

// demoTopology is the topology section of configs/demo.yaml, the building the
// description's examples name.
func demoTopology(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "configs", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("\ntopology:"))
	if i < 0 {
		t.Fatal("configs/demo.yaml has no topology section")
	}
	return string(b[i+1:])
}

func TestOpenAPI(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(t, cfgPath, e2eConfig{dir: filepath.Join(dir, "data"), topology: demoTopology(t)})
	d := startMain(t, cfgPath)
	base := "http://" + d.httpAddr
	const token = "e2e-token" // e2eConfig's http.token

	// Something to show: an accepted event (a DPU with a last event) and a rejected
	// message (a dead letter).
	c := mqttClient(t, d.brokerURL, "openapi-test")
	now := time.Now().UTC().Format(time.RFC3339Nano)
	publishAll(t, c, []e2eMessage{
		{topic: "dpu/dpu-main/events", payload: []byte(`{"id": 1, "ts": "` + now + `", "direction": 1}`)},
		{topic: "dpu/dpu-main/events", payload: []byte(`{"ts": "now", "direction": 1}`)},
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/v1/rejections")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(bytes.TrimSpace(b)) > 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter within 10 s: %s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}

	resp, err := http.Get(base + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(bytes.TrimSpace(served), bytes.TrimSpace(httpapi.OpenAPI)) {
		t.Fatalf("GET /v1/openapi.json: got %d and %d bytes, want 200 and the %d bytes of %s", resp.StatusCode, len(served), len(httpapi.OpenAPI), openAPIFile)
	}
	doc := parseOpenAPI(t, served)

	t.Run("valid", func(t *testing.T) {
		for _, e := range doc.structure() {
			t.Errorf("%s: %s", openAPIFile, e)
		}
	})

	described := doc.operations()
	t.Run("every route described", func(t *testing.T) {
		routes := d.main.HTTPRoutes()
		if len(routes) == 0 {
			t.Fatal("Main.HTTPRoutes is empty")
		}
		registered := map[string]bool{}
		for _, pat := range routes {
			r := patternRoute(pat)
			registered[r] = true
			if slices.Contains(described, r) {
				continue
			}
			meth, p, _ := strings.Cut(r, " ")
			t.Errorf("%s is served (registered as %q) but %s does not describe it: add \"paths\": {%q: {%q: {...}}} with "+
				"its parameters (each path parameter with an example: an id of configs/demo.yaml's building), "+
				"every status it answers with a description and a schema (errors: {\"$ref\": \"#/components/schemas/Error\"}), "+
				"a requestBody with an example if it takes a body, and \"security\": [{\"bearer\": []}] for a write route; "+
				"then document it in docs/http.md", r, pat, openAPIFile, p, strings.ToLower(meth))
		}
		for _, op := range described {
			if !registered[op] {
				t.Errorf("%s describes %s, but the server registers no such route: remove it, or register it (httpapi.Server.Handle)", openAPIFile, op)
			}
		}
	})

	t.Run("every described route answers", func(t *testing.T) {
		for _, op := range described {
			t.Run(op, func(t *testing.T) {
				req, err := doc.request(op, base)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				req = req.WithContext(ctx)
				req.Header.Set("Authorization", "Bearer "+token)
				client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", req.Method, req.URL, err)
				}
				defer resp.Body.Close()
				ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				var body []byte
				if ct == "text/event-stream" {
					// A stream does not end: its first event is enough.
					b := make([]byte, 4096)
					n, _ := io.ReadAtLeast(resp.Body, b, len("event: occupancy\n"))
					body = b[:n]
				} else {
					body, _ = io.ReadAll(resp.Body)
				}
				call := fmt.Sprintf("%s %s", req.Method, req.URL.RequestURI())
				if resp.StatusCode == http.StatusNotFound && bytes.Contains(body, []byte(`"no route `)) || resp.StatusCode == http.StatusMethodNotAllowed {
					t.Fatalf("%s (%s, called with the description's examples) answered %d %s: the route is described but not served", op, call, resp.StatusCode, bytes.TrimSpace(body))
				}
				o := doc.operation(op)
				responses, _ := o["responses"].(map[string]any)
				r, ok := responses[fmt.Sprint(resp.StatusCode)].(map[string]any)
				if !ok {
					t.Fatalf("%s answered %d %s, which %s does not list for %s: add responses.\"%d\" (with a schema)", call, resp.StatusCode, truncateBytes(body), openAPIFile, op, resp.StatusCode)
				}
				content, _ := r["content"].(map[string]any)
				if len(content) == 0 {
					if len(bytes.TrimSpace(body)) > 0 {
						t.Errorf("%s answered %d with a body (%s) that %s does not describe: add its content", call, resp.StatusCode, truncateBytes(body), openAPIFile)
					}
					return
				}
				media, ok := content[ct].(map[string]any)
				if !ok {
					t.Fatalf("%s answered %d as %q, which %s does not list for it (it lists %v)", call, resp.StatusCode, ct, openAPIFile, mapKeys(content))
				}
				if ct == "text/event-stream" {
					if !bytes.HasPrefix(body, []byte("event: occupancy\ndata: {")) {
						t.Errorf("%s: the stream began %q, want an occupancy event", call, truncateBytes(body))
					}
					return
				}
				if ct != "application/json" {
					return
				}
				var v any
				if err := json.Unmarshal(body, &v); err != nil {
					t.Fatalf("%s answered %d with a body that is not JSON: %v: %s", call, resp.StatusCode, err, truncateBytes(body))
				}
				// One message per kind of mismatch, not one per array element.
				seen := map[string]bool{}
				for _, e := range doc.validate(media["schema"], v, "$", op) {
					if k := arrayIndex.ReplaceAllString(e, "[i]"); !seen[k] {
						seen[k] = true
						t.Errorf("%s answered %d; the answer does not match %s: %s", call, resp.StatusCode, openAPIFile, k)
					}
				}
			})
		}
	})

	// The checks above can fail: a field, a status and a route the description lacks.
	t.Run("the checks catch omissions", func(t *testing.T) {
		occ := map[string]any{"space": "a", "name": "A", "occupancy": 1.0, "updated": "x", "settled_until": "y"}
		if e := doc.validate(map[string]any{"$ref": "#/components/schemas/Occupancy"}, occ, "$", ""); len(e) > 0 {
			t.Fatalf("a valid occupancy object fails: %v", e)
		}
		occ["surprise"] = true
		if e := doc.validate(map[string]any{"$ref": "#/components/schemas/Occupancy"}, occ, "$", ""); len(e) != 1 || !strings.Contains(e[0], `"surprise"`) {
			t.Errorf("an undescribed field: got %v, want one error naming it", e)
		}
		delete(occ, "surprise")
		delete(occ, "space")
		if e := doc.validate(map[string]any{"$ref": "#/components/schemas/Occupancy"}, occ, "$", ""); len(e) != 1 {
			t.Errorf("a missing required field: got %v, want one error", e)
		}
		if r := patternRoute("GET /{$}"); r != "GET /" {
			t.Errorf("patternRoute(GET /{$}) = %q", r)
		}
		if slices.Contains(described, patternRoute("POST /v1/nothing/{id}")) {
			t.Error("an unknown route counts as described")
		}
	})
}

var arrayIndex = regexp.MustCompile(`\[\d+\]`)

func truncateBytes(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

func mapKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
