package gateway

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/occupancyd/occupancyd"

// layers is the table of doc.go: each package beneath gateway/ and its layer. A
// package below one of them (gateway/httpapi/ui) is in its layer and may import
// within its own subtree.
var layers = map[string]int{
	"gateway/metrics": 0, "gateway/payload": 0, "gateway/sdnotify": 0,
	"gateway/mqttconn": 0, "gateway/mqtttopic": 0, "gateway/lograte": 0,
	"gateway/config": 1, "gateway/tracker": 1,
	"gateway/ingest": 2,
	"gateway/broker": 3, "gateway/mqtt": 3, "gateway/httpapi": 3, "gateway/stream": 3,
}

// layerOf is the layer of pkg: its own, or that of the nearest package above it.
func layerOf(pkg string) (int, bool) {
	for p := pkg; strings.Contains(p, "/"); p = p[:strings.LastIndex(p, "/")] {
		if l, ok := layers[p]; ok {
			return l, true
		}
	}
	return 0, false
}

// sameTree reports whether one of a and b is beneath the other.
func sameTree(a, b string) bool {
	return strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

// imports returns, per package directory of the module (relative, slash-separated),
// the module's packages its non-test files import.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		pkg := filepath.ToSlash(rel)
		if _, ok := out[pkg]; !ok {
			out[pkg] = nil
		}
		for _, im := range f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			if q, ok := strings.CutPrefix(p, module+"/"); ok && !slices.Contains(out[pkg], q) {
				out[pkg] = append(out[pkg], q)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLayers proves the dependencies point one way (ARCHITECTURE.md): occupancy
// imports nothing of ours, buffer only occupancy, a gateway package only occupancy,
// buffer and the gateway packages of lower layers, systemd (the embedded unit file)
// nothing, and nothing imports cmd/.
func TestLayers(t *testing.T) {
	all := imports(t)
	if len(all) < 10 {
		t.Fatalf("found %d packages: the walk is broken", len(all))
	}
	for pkg, deps := range all {
		for _, dep := range deps {
			if strings.HasPrefix(dep, "cmd/") {
				t.Errorf("%s imports %s: nothing imports a command", pkg, dep)
			}
		}
		switch {
		case pkg == "occupancy" || strings.HasPrefix(pkg, "occupancy/"):
			if len(deps) > 0 {
				t.Errorf("%s imports %v: occupancy/ imports nothing of occupancyd", pkg, deps)
			}
		case pkg == "systemd":
			if len(deps) > 0 {
				t.Errorf("systemd (the unit file, embedded) imports %v", deps)
			}
		case pkg == "buffer" || strings.HasPrefix(pkg, "buffer/"):
			for _, dep := range deps {
				if dep != "occupancy" {
					t.Errorf("%s imports %s: buffer/ imports only occupancy", pkg, dep)
				}
			}
		case pkg == "gateway":
			if len(deps) > 0 {
				t.Errorf("gateway (the map of its packages) imports %v", deps)
			}
		case strings.HasPrefix(pkg, "gateway/"):
			layer, ok := layerOf(pkg)
			if !ok {
				t.Errorf("%s is in no layer: add it to doc.go and the table in layers_test.go", pkg)
				continue
			}
			for _, dep := range deps {
				if dep == "occupancy" || dep == "buffer" || sameTree(pkg, dep) {
					continue
				}
				if l, ok := layerOf(dep); !ok || l >= layer {
					t.Errorf("%s (layer %d) imports %s (layer %d): a gateway package imports only lower layers", pkg, layer, dep, l)
				}
			}
		case strings.HasPrefix(pkg, "cmd/"):
		default:
			t.Errorf("package %s is outside the layout (cmd, gateway, occupancy, buffer, systemd)", pkg)
		}
	}
	for pkg := range layers {
		if _, err := os.Stat(filepath.Join("..", pkg)); err == nil {
			if _, ok := all[pkg]; !ok {
				t.Errorf("%s exists but was not read", pkg)
			}
		}
	}
}
