package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/gateway/metrics"
	"github.com/occupancyd/occupancyd/occupancy"
)

// The reference in docs/ keeps up with the code: every rejection reason the code
// has (occupancy.Reason constants) is in the table of docs/sensors.md, every metric
// the code registers is in docs/operations.md, and every relative link of the
// Markdown files resolves inside the repository.

const repoRoot = "../.."

// linkedDocs are the Markdown files whose links are checked (docs/*.md added).
var linkedDocs = []string{"README.md", "ARCHITECTURE.md", "BENCHMARKS.md", "CHANGELOG.md"}

func TestDocs(t *testing.T) {
	t.Run("rejection reasons", func(t *testing.T) {
		reasons := reasonConstants(t)
		if len(reasons) < 12 {
			t.Fatalf("found %d occupancy.Reason constants (%v), want at least 12: is the parse broken?", len(reasons), reasons)
		}
		// docs/operations.md says every reason's series exists from the start.
		series := map[string]bool{}
		mfs, err := metrics.New().Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "occupancyd_events_rejected_total" {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						series[l.GetValue()] = true
					}
				}
			}
		}
		doc := readDoc(t, "docs/sensors.md")
		for _, r := range reasons {
			if !series[r] {
				t.Errorf("occupancyd_events_rejected_total{reason=%q} is not there before the first rejection: add its occupancy.Reason constant to rejectReasons in gateway/metrics/metrics.go", r)
			}
			if !strings.Contains(doc, "| `"+r+"` |") {
				t.Errorf("rejection reason %q (an occupancy.Reason constant) is not in the table of docs/sensors.md#rejection-reasons: add a row \"| `%s` | what was wrong |\"", r, r)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		names := metricNames(t)
		if !slices.Contains(names, "occupancyd_events_rejected_total") || len(names) < 10 {
			t.Fatalf("found metrics %v: is the search broken?", names)
		}
		doc := readDoc(t, "docs/operations.md")
		for _, n := range names {
			if !strings.Contains(doc, "`"+n+"`") && !strings.Contains(doc, "`"+n+"{") {
				t.Errorf("metric %s is registered by the code but not in docs/operations.md#metrics: add a row \"| `%s` | type | meaning |\"", n, n)
			}
		}
	})

	t.Run("configuration keys", func(t *testing.T) {
		conf := readDoc(t, "docs/configuration.md")
		var keys []string
		yamlKeys(reflect.TypeOf(config.Config{}), "", &keys)
		if len(keys) < 30 {
			t.Fatalf("found %d configuration keys (%v): is the walk broken?", len(keys), keys)
		}
		for _, k := range keys {
			if !strings.Contains(conf, "`"+k+"`") {
				t.Errorf("configuration key %s is not in docs/configuration.md: add a row \"| `%s` | default | meaning |\"", k, k)
			}
		}
		for _, c := range []struct {
			doc string
			typ reflect.Type
		}{
			{"docs/building.md", reflect.TypeOf(occupancy.SpaceConfig{})},
			{"docs/building.md", reflect.TypeOf(occupancy.DPUConfig{})},
			{"docs/sensors.md", reflect.TypeOf(occupancy.Mapping{})},
		} {
			doc, typ := c.doc, c.typ
			text := readDoc(t, doc)
			var fields []string
			yamlKeys(typ, "", &fields)
			var rows []string // table rows
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, "|") {
					rows = append(rows, l)
				}
			}
			for _, f := range fields {
				if !slices.ContainsFunc(rows, func(r string) bool { return strings.Contains(r, "`"+f+"`") }) {
					t.Errorf("%s key %s is not in a table of %s: add a row \"| `%s` | meaning |\"", typ.Name(), f, doc, f)
				}
			}
		}
	})

	t.Run("links", func(t *testing.T) {
		files := append([]string{}, linkedDocs...)
		docs, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
		if err != nil || len(docs) == 0 {
			t.Fatalf("no docs/*.md: %v", err)
		}
		for _, d := range docs {
			files = append(files, strings.TrimPrefix(filepath.ToSlash(d), repoRoot+"/"))
		}
		for _, f := range files {
			for _, e := range checkLinks(repoRoot, f) {
				t.Error(e)
			}
		}
	})

	t.Run("the checks can fail", func(t *testing.T) {
		for in, want := range map[string]string{
			"POST /v1/spaces/{id}/reset":                "post-v1spacesidreset",
			"Pending and settled: the settled horizon":  "pending-and-settled-the-settled-horizon",
			"With `occupancyd install`":                 "with-occupancyd-install",
			"See [the unit](x.md) and `GET /v1/status`": "see-the-unit-and-get-v1status",
		} {
			if got := headingSlug(in); got != want {
				t.Errorf("headingSlug(%q) = %q, want %q", in, got, want)
			}
		}
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "docs"), 0o755); err != nil {
			t.Fatal(err)
		}
		md := "# A\n\n## Here it is\n\n[ok](#here-it-is) [ok](../README.md) [bad](#nowhere) [bad](missing.md)\n" +
			"[bad](../README.md#no-such-part) [bad](../../shared/DESIGN.md) [ext](https://example.com/x)\n" +
			"```\n[not a link](nowhere.md)\n```\n"
		for name, body := range map[string]string{"README.md": "# R\n", "docs/a.md": md} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		errs := checkLinks(dir, "docs/a.md")
		if len(errs) != 5 { // the ../shared link twice: as ../shared and as leaving the repository
			t.Errorf("checkLinks of a file with 4 bad links: got %d errors: %v", len(errs), errs)
		}
	})
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// reasonConstants are the values of the constants of type Reason in occupancy/.
func reasonConstants(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(repoRoot, "occupancy", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, path := range files {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
					continue
				}
				for _, v := range vs.Values {
					if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
						s, _ := strconv.Unquote(lit.Value)
						out = append(out, s)
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// yamlKeys lists the leaf keys of a configuration struct by their yaml tags
// (mqtt.tls.ca_file); the topology is left out (building.md has its fields).
func yamlKeys(typ reflect.Type, prefix string, out *[]string) {
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := name
		if key == "topology" && prefix == "" {
			continue
		}
		if prefix != "" {
			key = prefix + "." + name
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() != "time" {
			yamlKeys(f.Type, key, out)
			continue
		}
		*out = append(*out, key)
	}
}

// metricNamePattern finds a metric name where the code names one to Prometheus: a
// collector's Name or a NewDesc.
var metricNamePattern = regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(occupancyd_[a-z0-9_]+)"`)

// metricNames are the occupancyd_ metrics of a fresh metrics set (what it gathers)
// and every name the module's Go code gives a collector.
func metricNames(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	mfs, err := metrics.New().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "occupancyd_") {
			seen[mf.GetName()] = true
		}
	}
	err = filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != repoRoot || d.Name() == "testdata" || d.Name() == "mkpackage") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricNamePattern.FindAllSubmatch(b, -1) {
			seen[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var (
	mdLink     = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	inlineCode = regexp.MustCompile("`[^`]*`")
	schemeRE   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// checkLinks checks every link of the Markdown file name (relative to root): a
// relative target must exist inside root, an anchor must name a heading of its
// file, and nothing may point to ../shared (DESIGN.md lives outside the repository).
func checkLinks(root, name string) []string {
	b, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		return []string{err.Error()}
	}
	var errs []string
	inFence := false
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		if strings.Contains(line, "../shared") {
			errs = append(errs, name+":"+strconv.Itoa(i+1)+": points to ../shared, which is not in the repository: link to docs/ instead")
		}
		for _, m := range mdLink.FindAllStringSubmatch(inlineCode.ReplaceAllString(line, ""), -1) {
			target := m[1]
			at := name + ":" + strconv.Itoa(i+1) + ": link " + target
			if schemeRE.MatchString(target) {
				continue // an address outside: not checked here
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := name
			if file != "" {
				path = filepath.ToSlash(filepath.Join(filepath.Dir(name), file))
				if path == ".." || strings.HasPrefix(path, "../") {
					errs = append(errs, at+": leaves the repository")
					continue
				}
				if _, err := os.Stat(filepath.Join(root, path)); err != nil {
					errs = append(errs, at+": "+path+" does not exist")
					continue
				}
			}
			if anchor != "" && strings.HasSuffix(path, ".md") {
				if !slices.Contains(headingSlugs(filepath.Join(root, path)), anchor) {
					errs = append(errs, at+": "+path+" has no heading #"+anchor)
				}
			}
		}
	}
	return errs
}

// headingSlugs are the anchors GitHub gives the headings of a Markdown file.
func headingSlugs(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	count := map[string]int{}
	inFence := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		s := headingSlug(text)
		if n := count[s]; n > 0 {
			out = append(out, s+"-"+strconv.Itoa(n))
		} else {
			out = append(out, s)
		}
		count[s]++
	}
	return out
}

var linkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)

// headingSlug is GitHub's anchor of a heading: the text of its links, lower case,
// letters, digits, '-' and '_' kept, spaces as '-', everything else dropped.
func headingSlug(text string) string {
	text = linkText.ReplaceAllString(text, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
