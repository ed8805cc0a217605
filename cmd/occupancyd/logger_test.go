package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
)

func TestLogger(t *testing.T) {
	// The daemon sets log.level as zerolog's global level (setLogLevel), and other
	// tests of this package run it: the logger's own level is what is tested here.
	defer zerolog.SetGlobalLevel(zerolog.GlobalLevel())
	zerolog.SetGlobalLevel(zerolog.TraceLevel)
	t.Run("json", func(t *testing.T) {
		var buf bytes.Buffer
		log, err := newLogger(config.LogConfig{Level: "warn", Format: "json"}, &buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Info().Msg("hidden")
		log.Warn().Str("space", "lobby").Msg("shown")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 1 {
			t.Fatalf("got %d lines %q, want 1 (info filtered at warn)", len(lines), buf.String())
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
			t.Fatalf("not JSON: %v: %s", err, lines[0])
		}
		for k, want := range map[string]any{"level": "warn", "message": "shown", "space": "lobby"} {
			if rec[k] != want {
				t.Errorf("%s: got %v, want %v", k, rec[k], want)
			}
		}
		if _, err := time.Parse(time.RFC3339, rec["time"].(string)); err != nil {
			t.Errorf("time: %v", err)
		}
	})
	t.Run("console", func(t *testing.T) {
		var buf bytes.Buffer
		log, err := newLogger(config.LogConfig{Level: "debug", Format: "console"}, &buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug().Str("space", "lobby").Msg("hello")
		out := buf.String()
		if json.Valid(bytes.TrimSpace(buf.Bytes())) {
			t.Errorf("console output is JSON: %s", out)
		}
		for _, want := range []string{"DBG", "hello", "space=lobby"} {
			if !strings.Contains(out, want) {
				t.Errorf("got %q, want it to contain %q", out, want)
			}
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("colours written to a non-terminal: %q", out)
		}
	})
	t.Run("bad level", func(t *testing.T) {
		_, err := newLogger(config.LogConfig{Level: "loud", Format: "json"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "log.level") {
			t.Errorf("got %v", err)
		}
	})
	t.Run("bad format", func(t *testing.T) {
		_, err := newLogger(config.LogConfig{Level: "info", Format: "xml"}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), `log.format`) {
			t.Errorf("got %v", err)
		}
	})
}
