package lograte

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	r := New(zerolog.New(&buf), zerolog.ErrorLevel, time.Hour)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	calls := 0
	f := func(e *zerolog.Event) *zerolog.Event { calls++; return e.Str("k", "v") }
	lines := func() []string { return strings.Split(strings.TrimSpace(buf.String()), "\n") }
	for range 5 {
		r.Log(f, "store failed")
	}
	t.Run("one line per interval", func(t *testing.T) {
		if got := lines(); len(got) != 1 || !strings.Contains(got[0], `"level":"error"`) || !strings.Contains(got[0], `"k":"v"`) {
			t.Fatalf("after 5 calls within the interval: got %q, want one error line with its fields", got)
		}
		if calls != 1 {
			t.Errorf("fields ran %d times, want 1 (only for a written line)", calls)
		}
		if got := r.Suppressed(); got != 4 {
			t.Errorf("suppressed = %d, want 4", got)
		}
	})
	t.Run("next interval carries the count", func(t *testing.T) {
		now = now.Add(time.Hour)
		r.Log(f, "store failed")
		got := lines()
		if len(got) != 2 || !strings.Contains(got[1], `"suppressed":4`) {
			t.Fatalf("got %q, want a second line with suppressed 4", got)
		}
	})
	t.Run("flush reports what is left", func(t *testing.T) {
		r.Log(f, "store failed")
		r.Log(f, "store failed")
		r.Flush()
		got := lines()
		if len(got) != 3 || !strings.Contains(got[2], `"suppressed":2`) || !strings.Contains(got[2], "store failed (suppressed lines)") {
			t.Fatalf("got %q, want a third line with suppressed 2", got)
		}
		r.Flush()
		if n := len(lines()); n != 3 {
			t.Errorf("a second Flush wrote a line: %d lines, want 3", n)
		}
	})
}
