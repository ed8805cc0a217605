package main

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/buffer"
	"github.com/occupancyd/occupancyd/occupancy"
)

func TestMainRunErrors(t *testing.T) {
	t.Run("storage in use", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "occupancyd.yaml")
		writeConfig(t, path, e2eConfig{dir: filepath.Join(dir, "data")})
		startMain(t, path)
		m := NewMain()
		m.ConfigPath = path
		m.Logger = zerolog.Nop()
		err := m.Run(context.Background())
		if !errors.Is(err, buffer.ErrLocked) {
			t.Fatalf("second Run on the same storage = %v, want ErrLocked", err)
		}
		if m.HTTPAddr() != "" || m.BrokerAddr() != "" {
			t.Errorf("a failed Run left listeners: http %q broker %q", m.HTTPAddr(), m.BrokerAddr())
		}
		if err := m.Close(); err != nil {
			t.Errorf("Close after a failed Run: %v", err)
		}
	})
	t.Run("HTTP port taken", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "a.yaml")
		writeConfig(t, path, e2eConfig{dir: filepath.Join(dir, "a")})
		first := startMain(t, path)
		path2 := filepath.Join(dir, "b.yaml")
		writeConfig(t, path2, e2eConfig{dir: filepath.Join(dir, "b"), httpListen: first.httpAddr})
		m := NewMain()
		m.ConfigPath = path2
		m.Logger = zerolog.Nop()
		err := m.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "http.listen") {
			t.Fatalf("Run with a busy HTTP port = %v, want an http.listen error", err)
		}
		// The storage it opened is closed again: a third Main can take it.
		m3 := NewMain()
		m3.ConfigPath = path2
		m3.Logger = zerolog.Nop()
		writeConfig(t, path2, e2eConfig{dir: filepath.Join(dir, "b")})
		if err := m3.Run(context.Background()); err != nil {
			t.Fatalf("Run after the failed one: %v", err)
		}
		if err := m3.Close(); err != nil {
			t.Fatal(err)
		}
	})
	// A topology is validated before it is stored, unless it is the one LoadConfig
	// validated: one changed after loading (even in place) or set by hand is not
	// stored when invalid, and the storage keeps no version of it.
	for _, tc := range []struct {
		name   string
		break_ func(m *Main)
	}{
		{"topology changed in place after loading", func(m *Main) { m.Config.Topology.DPUs[0].PlusSpace = "nowhere" }},
		{"topology set by hand", func(m *Main) {
			m.Config.Topology.DPUs = append(m.Config.Topology.DPUs[:0:0], m.Config.Topology.DPUs...)
			m.Config.Topology.DPUs[0].Doorway = "no-such-door"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "occupancyd.yaml")
			writeConfig(t, path, e2eConfig{dir: filepath.Join(dir, "data")})
			m, err := newMainFromFile(path, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			m.Logger = zerolog.Nop()
			tc.break_(m)
			err = m.Run(context.Background())
			var pe *occupancy.ProblemsError
			if !errors.As(err, &pe) || !strings.HasPrefix(err.Error(), "topology: ") {
				m.Close()
				t.Fatalf("Run with an invalid topology = %v, want topology: problems", err)
			}
			store, err := buffer.Open(buffer.Options{Dir: filepath.Join(dir, "data"), Logger: zerolog.Nop()})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			if vs, err := store.Versions(); err != nil || len(vs) != 0 {
				t.Fatalf("stored versions after the refused start: %d (%v), want none", len(vs), err)
			}
		})
	}
	t.Run("bad config", func(t *testing.T) {
		err := runCommand([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")})
		if err == nil {
			t.Fatal("run with a missing config file succeeded")
		}
		if err := runCommand([]string{"--config"}); err == nil {
			t.Fatal("run --config without a value succeeded")
		}
		if err := runCommand([]string{"extra"}); err == nil || !strings.Contains(err.Error(), "unexpected argument") {
			t.Fatalf("run extra = %v, want unexpected argument", err)
		}
	})
}

func TestStatusPageURL(t *testing.T) {
	host := func() (string, error) { return "gw-7.example", nil }
	noHost := func() (string, error) { return "", errors.New("no host name") }
	for _, c := range []struct {
		listen, bound string
		hostname      func() (string, error)
		want          string
	}{
		{"127.0.0.1:8080", "127.0.0.1:8080", host, "http://127.0.0.1:8080/"},
		{"127.0.0.1:0", "127.0.0.1:41234", host, "http://127.0.0.1:41234/"},
		{"10.1.2.3:80", "10.1.2.3:80", host, "http://10.1.2.3:80/"},
		{"[::1]:8080", "[::1]:8080", host, "http://[::1]:8080/"},
		{"[fd00::7]:8080", "[fd00::7]:8080", host, "http://[fd00::7]:8080/"},
		{"gateway.local:9090", "192.0.2.4:9090", host, "http://gateway.local:9090/"},
		{"0.0.0.0:8080", "0.0.0.0:8080", host, "http://gw-7.example:8080/"},
		{"[::]:8080", "[::]:8080", host, "http://gw-7.example:8080/"},
		{":8080", "[::]:8080", host, "http://gw-7.example:8080/"},
		{":8080", "[::]:8080", noHost, ""},
		{"nonsense", "", host, ""},
	} {
		if got := statusPageURL(c.listen, c.bound, c.hostname); got != c.want {
			t.Errorf("statusPageURL(%q, %q) = %q, want %q", c.listen, c.bound, got, c.want)
		}
	}
}
