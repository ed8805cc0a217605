// Package sdnotifytest is the receiving end of $NOTIFY_SOCKET for tests: a real
// unixgram socket, as systemd binds it.
package sdnotifytest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Socket is a listening notification socket; Addr is what $NOTIFY_SOCKET would say.
type Socket struct {
	Addr string
	t    testing.TB
	conn *net.UnixConn
}

// Listen binds a unixgram socket at a path in a fresh temporary directory, or at an
// abstract name ('@...') when abstract is set. It closes when the test ends.
func Listen(t testing.TB, abstract bool) *Socket {
	t.Helper()
	// Socket paths are limited to 107 bytes; t.TempDir() names can be longer.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := filepath.Join(dir, "notify")
	if abstract {
		addr = fmt.Sprintf("@occupancyd-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &Socket{Addr: addr, t: t, conn: conn}
}

// Next returns the next datagram, or "" if none comes within d.
func (s *Socket) Next(d time.Duration) string {
	s.t.Helper()
	buf := make([]byte, 4096)
	s.conn.SetReadDeadline(time.Now().Add(d))
	n, err := s.conn.Read(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return ""
		}
		s.t.Fatal(err)
	}
	return string(buf[:n])
}

// Until reads datagrams until one contains want and returns it with those read
// before it; the test fails if none does within d.
func (s *Socket) Until(want string, d time.Duration) (match string, before []string) {
	s.t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); {
		m := s.Next(time.Until(end))
		if strings.Contains(m, want) {
			return m, before
		}
		if m != "" {
			before = append(before, m)
		}
	}
	s.t.Fatalf("no notification with %q within %s; got %q", want, d, before)
	return "", nil
}

// None fails the test if a datagram containing any of the states arrives within d;
// it returns the datagrams read.
func (s *Socket) None(d time.Duration, states ...string) []string {
	s.t.Helper()
	var got []string
	for end := time.Now().Add(d); time.Now().Before(end); {
		m := s.Next(time.Until(end))
		if m == "" {
			continue
		}
		got = append(got, m)
		for _, st := range states {
			if strings.Contains(m, st) {
				s.t.Fatalf("unexpected %q: %q", st, m)
			}
		}
	}
	return got
}
