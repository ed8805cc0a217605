package mqtttopic

import (
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
)

func TestCheckFilter(t *testing.T) {
	for _, tc := range []struct {
		f, err string
	}{
		{"dpu/+/events", ""}, {"#", ""}, {"+", ""}, {"a/#", ""}, {"+/+/#", ""}, {"a//b", ""},
		{"", "empty topic filter"},
		{"a/#/b", `"a/#/b": '#' must be the last level`},
		{"a/b#", `"a/b#": '+' and '#' must fill a whole level`},
		{"a/+b/c", `"a/+b/c": '+' and '#' must fill a whole level`},
	} {
		t.Run(tc.f, func(t *testing.T) {
			err := CheckFilter(tc.f)
			if got := fmt.Sprint(err); (err == nil) != (tc.err == "") || err != nil && got != tc.err {
				t.Errorf("got %v, want %q", err, tc.err)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		f, t, plus string
		ok         bool
	}{
		{"dpu/+/events", "dpu/283/events", "283", true},
		{"dpu/+/events", "dpu/283/other", "", false},
		{"dpu/+/events", "dpu/283", "", false},
		{"dpu/+/events", "dpu/283/events/x", "", false},
		{"+/dpu/+/events", "site/dpu/7/events", "7", true},
		{"site/+/#", "site/7/a/b", "7", true},
		{"site/+/#", "site/7", "7", true},
		{"site/+/#", "site", "", false},
		{"a/#", "a", "", true},
		{"a/#", "b", "", false},
		{"#", "anything/at/all", "", true},
		{"irisys/counts", "irisys/counts", "", true},
		{"a//b", "a//b", "", true},
		{"+", "", "", true}, // the empty topic has one empty level
	} {
		t.Run(tc.f+" "+tc.t, func(t *testing.T) {
			plus, ok := Match(tc.f, tc.t)
			if plus != tc.plus || ok != tc.ok {
				t.Errorf("got %q, %v; want %q, %v", plus, ok, tc.plus, tc.ok)
			}
		})
	}
}

// TestMatchModel holds Match to the MQTT rule written level by level as a regular
// language: a random filter matches a random topic iff the model says so, and the
// level of the last '+' is the one the model takes.
func TestMatchModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	words := []string{"a", "b", ""}
	for n := 0; n < 20000; n++ {
		var fl, tl []string
		for i := rng.Intn(4) + 1; i > 0; i-- {
			switch r := rng.Intn(5); {
			case r == 0:
				fl = append(fl, "+")
			case r == 1 && i == 1:
				fl = append(fl, "#")
			default:
				fl = append(fl, words[rng.Intn(len(words))])
			}
		}
		for i := rng.Intn(5) + 1; i > 0; i-- {
			tl = append(tl, words[rng.Intn(len(words))])
		}
		f, topic := strings.Join(fl, "/"), strings.Join(tl, "/")
		wantPlus, wantOK := model(fl, tl)
		if plus, ok := Match(f, topic); ok != wantOK || ok && plus != wantPlus {
			t.Fatalf("Match(%q, %q) = %q, %v; want %q, %v", f, topic, plus, ok, wantPlus, wantOK)
		}
	}
}

// model matches level lists recursively: '#' takes whatever is left (none too),
// '+' any one level, a word itself.
func model(fl, tl []string) (string, bool) {
	if len(fl) == 0 {
		return "", len(tl) == 0
	}
	if fl[0] == "#" {
		return "", true
	}
	if len(tl) == 0 || fl[0] != "+" && fl[0] != tl[0] {
		return "", false
	}
	plus, ok := model(fl[1:], tl[1:])
	if ok && plus == "" && fl[0] == "+" && !slices.Contains(fl[1:], "+") {
		plus = tl[0]
	}
	return plus, ok
}
