// Command occupancyd is the occupancy gateway daemon: it takes people-counting DPU
// events from MQTT, stores them durably, computes the occupancy of every space of a
// building topology and republishes it (DESIGN.md).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

const usageText = `occupancyd: an MQTT edge gateway for people-counting sensors

Usage:
  occupancyd run [--config FILE]            run in the foreground
  occupancyd check --config FILE            validate a configuration and summarise it
  occupancyd import --config FILE EVENTS... backfill events (CSV or JSON lines) while stopped
  occupancyd install [--config FILE]        install the system service (default config
                                            ` + defaultServiceConfig + `)
  occupancyd uninstall                      remove the system service
  occupancyd start|stop|restart             control the system service
  occupancyd status                         print the service status (exit 0 running,
                                            3 stopped, 4 not installed)
  occupancyd version                        print the version
  occupancyd help [COMMAND]                 print this text, or a command's help

Every command answers --help (-h) with its flags, their defaults and an example.

Signals (run): SIGINT/SIGTERM stop cleanly (a second one exits at once), SIGHUP
reloads the configuration.
`

// exitError carries an exit status; its message (if any) has been printed already.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

// dispatch runs the command named by args[0] and returns the process exit status.
func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "run":
		err = runService(rest)
	case "check":
		err = checkCommand(rest, stdout)
	case "import":
		err = importCommand(rest, stdout, stderr)
	case "install", "uninstall", "start", "stop", "restart", "status":
		err = serviceCommand(cmd, rest, stdout)
	case "version", "--version", "-version":
		err = versionCommand(rest, stdout)
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 && rest[0] != "help" && !strings.HasPrefix(rest[0], "-") {
			return dispatch([]string{rest[0], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usageText)
	default:
		err = usageErrorf("unknown command %q", cmd)
	}
	if err == nil {
		return 0
	}
	var help *helpRequest
	if errors.As(err, &help) {
		writeCommandHelp(stdout, help.fs)
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "occupancyd: "+ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "occupancyd: "+err.Error())
	return 1
}

// usageErrorf is a command-line mistake: exit status 2 with a pointer to the usage.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...) + " (see occupancyd help)"}
}

// parseCommandFlags parses a command's flags, which may come before or after its
// positional arguments ("import EVENTS --config FILE" works too). It returns the
// positional arguments; for --help or -h, a *helpRequest.
func parseCommandFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, &helpRequest{fs: fs}
			}
			return nil, commandUsageErrorf(fs.Name(), "%s: %v", fs.Name(), err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// requireConfig returns the --config value or a usage error naming the command.
func requireConfig(cmd, path string) (string, error) {
	if strings.TrimSpace(path) == "" {
		return "", commandUsageErrorf(cmd, "%s needs --config FILE", cmd)
	}
	return path, nil
}
