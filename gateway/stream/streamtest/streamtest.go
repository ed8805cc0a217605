// Package streamtest is a client of GET /v1/stream for tests: it reads the
// Server-Sent Events as a plain HTTP client would and hands them over one by one.
package streamtest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Event is one Server-Sent Event; a comment line (": heartbeat") is an Event with
// an empty Name and the comment as Data.
type Event struct {
	Name string
	Data string
}

// Occupancy is the part of the occupancy object (DESIGN 2) the tests compare.
type Occupancy struct {
	Space     string `json:"space"`
	Name      string `json:"name"`
	Occupancy int64  `json:"occupancy"`
	Capacity  int64  `json:"capacity"`
}

// Stream is an open stream. Its methods take the test they run in: a stream opened
// by a test may be read by its subtests.
type Stream struct {
	events chan Event
	cancel context.CancelFunc
}

// Open connects to url and fails the test unless the answer is 200
// text/event-stream. The stream closes when the test ends.
func Open(t testing.TB, url string, header ...string) *Stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s = %d %s, want 200", url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("GET %s: Content-Type %q, want text/event-stream", url, ct)
	}
	s := &Stream{events: make(chan Event, 1<<16), cancel: cancel}
	go read(resp.Body, s.events)
	t.Cleanup(s.Close)
	return s
}

// Close ends the stream.
func (s *Stream) Close() { s.cancel() }

func read(body io.ReadCloser, out chan<- Event) {
	defer close(out)
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev Event
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.Name != "" {
				out <- ev
			}
			ev = Event{}
		case strings.HasPrefix(line, ":"):
			out <- Event{Data: strings.TrimSpace(line[1:])}
		case strings.HasPrefix(line, "event: "):
			ev.Name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			ev.Data = line[len("data: "):]
		}
	}
}

// Event returns the next event or comment, or fails the test after d.
func (s *Stream) Event(t testing.TB, d time.Duration) Event {
	t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(d):
		t.Fatalf("no event within %v", d)
	}
	return Event{}
}

// Next returns the next occupancy event (comments skipped), or fails the test after d.
func (s *Stream) Next(t testing.TB, d time.Duration) Occupancy {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev := s.Event(t, time.Until(deadline))
		if ev.Name == "" {
			continue
		}
		if ev.Name != "occupancy" {
			t.Fatalf("event %q, want occupancy", ev.Name)
		}
		var o Occupancy
		if err := json.Unmarshal([]byte(ev.Data), &o); err != nil {
			t.Fatalf("event data %q: %v", ev.Data, err)
		}
		return o
	}
}

// Ended fails the test unless the server ends the stream within d (events before
// the end are skipped).
func (s *Stream) Ended(t testing.TB, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case _, ok := <-s.events:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("the stream did not end within %v", d)
		}
	}
}

// Quiet fails the test if an occupancy event arrives within d.
func (s *Stream) Quiet(t testing.TB, d time.Duration) {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-s.events:
			if ok && ev.Name != "" {
				t.Fatalf("unexpected event %s %s", ev.Name, ev.Data)
			}
			if !ok {
				return
			}
		case <-timeout:
			return
		}
	}
}

// InOrder reports whether the values a client saw (got) appear in the values a space
// took (hist) in order: coalescing may skip values, never reorder them.
func InOrder(got, hist []int64) bool {
	i := 0
	for _, v := range hist {
		if i < len(got) && got[i] == v {
			i++
		}
	}
	return i == len(got)
}
