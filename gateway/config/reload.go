package config

import (
	"reflect"
	"strings"
)

// reloadable are the keys a reload (SIGHUP) applies, DESIGN 6: the topology (capacities
// and daily resets included), engine.tick and log.level.
var reloadable = map[string]bool{"topology": true, "engine.tick": true, "log.level": true}

// RestartKeys lists the keys whose change between the running configuration a and
// a reloaded b only takes effect after a restart: every changed key but the
// reloadable ones, in file order (a key added to Config is covered).
func RestartKeys(a, b Config) []string {
	var keys []string
	var walk func(a, b reflect.Value, path string)
	walk = func(a, b reflect.Value, path string) {
		for i := 0; i < a.NumField(); i++ {
			name, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("yaml"), ",")
			key := joinPath(path, name)
			switch fa, fb := a.Field(i), b.Field(i); {
			case name == "-" || reloadable[key] || reflect.DeepEqual(fa.Interface(), fb.Interface()):
			case fa.Kind() == reflect.Struct:
				walk(fa, fb, key)
			default:
				keys = append(keys, key)
			}
		}
	}
	walk(reflect.ValueOf(a), reflect.ValueOf(b), "")
	return keys
}
