package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/occupancyd/occupancyd/gateway/config"
)

// newLogger builds the process logger from the log section (validated by config):
// JSON lines when the format is "json", a human-readable console format otherwise
// (colours only on a terminal), at the level ("" is info).
func newLogger(cfg config.LogConfig, w io.Writer) (zerolog.Logger, error) {
	level := zerolog.InfoLevel
	if cfg.Level != "" {
		l, err := zerolog.ParseLevel(cfg.Level)
		if err != nil {
			return zerolog.Nop(), fmt.Errorf("log.level: %w", err)
		}
		level = l
	}
	switch cfg.Format {
	case "json":
		return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
	case "console", "":
		cw := zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
		return zerolog.New(cw).Level(level).With().Timestamp().Logger(), nil
	}
	return zerolog.Nop(), fmt.Errorf("log.format: want \"console\" or \"json\", got %q", cfg.Format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
