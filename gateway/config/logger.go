package config

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// NewLogger builds the process logger: JSON lines when cfg.Format is "json", a
// human-readable console format otherwise (colours only on a terminal), at cfg.Level.
func NewLogger(cfg LogConfig, w io.Writer) (zerolog.Logger, error) {
	level := zerolog.InfoLevel
	if cfg.Level != "" {
		if !logLevels[cfg.Level] {
			return zerolog.Nop(), fmt.Errorf("log.level: want \"debug\", \"info\", \"warn\" or \"error\", got %q", cfg.Level)
		}
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
	default:
		return zerolog.Nop(), fmt.Errorf("log.format: want \"console\" or \"json\", got %q", cfg.Format)
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
