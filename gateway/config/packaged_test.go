package config

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// packagedConfig is the commented default configuration the .deb and .rpm install as
// /etc/occupancyd/occupancyd.yaml.
const packagedConfig = "../../configs/occupancyd.yaml"

// TestPackagedConfig keeps configs/occupancyd.yaml valid, with the defaults (but its
// own gateway id, storage dir and example topology), and listing every key the
// configuration has, so that a key added to Config is documented there too; its
// example topology shows every field of a space, a doorway and a DPU.
func TestPackagedConfig(t *testing.T) {
	data, err := os.ReadFile(packagedConfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(packagedConfig)
	if err != nil {
		t.Fatalf("%s: %v", packagedConfig, err)
	}
	if cfg.Storage.Dir != "/var/lib/occupancyd" {
		t.Errorf("storage.dir: got %q, want the unit's StateDirectory /var/lib/occupancyd", cfg.Storage.Dir)
	}
	// Every value but these is the default.
	want := DefaultConfig()
	want.Gateway.ID, want.Storage.Dir, want.Topology = cfg.Gateway.ID, cfg.Storage.Dir, cfg.Topology
	want.ApplyDefaults()
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("%s sets values other than the defaults:\ngot  %+v\nwant %+v", packagedConfig, cfg, want)
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var missing []string
	checkKeys(reflect.TypeOf(Config{}), doc.Content[0], "", &missing)
	sort.Strings(missing)
	for _, k := range missing {
		t.Errorf("%s lacks %s: the packaged configuration lists every key with its default and a comment", packagedConfig, k)
	}
}

// checkKeys adds to missing every yaml key of struct type typ that mapping node n
// does not have; in a list of structs, every field must appear in one element.
func checkKeys(typ reflect.Type, n *yaml.Node, path string, missing *[]string) {
	have := map[string]*yaml.Node{}
	if n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			have[n.Content[i].Value] = n.Content[i+1]
		}
	}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := strings.TrimPrefix(path+"."+name, ".")
		v, ok := have[name]
		if !ok {
			*missing = append(*missing, key)
			continue
		}
		ft := f.Type
		switch {
		case reflect.PointerTo(ft).Implements(nodeDecoderType):
			// decoded by its own rules (e.g. events_topic): a leaf here
		case ft.Kind() == reflect.Struct && ft.PkgPath() != "time":
			checkKeys(ft, v, key, missing)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			elemKeys(ft.Elem(), v, key, missing)
		}
	}
}

// elemKeys adds every field of the list's element type that no element of sequence
// node n sets.
func elemKeys(typ reflect.Type, n *yaml.Node, path string, missing *[]string) {
	seen := map[string]bool{}
	for _, e := range n.Content {
		for i := 0; e.Kind == yaml.MappingNode && i+1 < len(e.Content); i += 2 {
			seen[e.Content[i].Value] = true
		}
	}
	for i := 0; i < typ.NumField(); i++ {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" && !seen[name] {
			*missing = append(*missing, path+"[]."+name)
		}
	}
}
