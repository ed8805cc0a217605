package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// commandHelp is what `occupancyd CMD --help` prints beside the command's flags.
type commandHelp struct {
	usage   string // after "occupancyd "
	about   string
	example string
}

// commandHelps has one entry for each command name a FlagSet is created with.
var commandHelps = map[string]commandHelp{
	"run": {
		usage: "run [--config FILE]",
		about: `Run the gateway in the foreground. Without --config it runs with the defaults: an
embedded MQTT broker on 127.0.0.1:1883, the HTTP API on 127.0.0.1:8080, storage in
./data and an empty topology. SIGINT/SIGTERM stop it cleanly within 10 s (a second
signal exits at once); SIGHUP reloads the topology, capacities, resets, engine.tick
and log.level. Under systemd (Type=notify) it reports readiness, status and
watchdog pings.`,
		example: "occupancyd run --config configs/demo.yaml",
	},
	"check": {
		usage: "check --config FILE",
		about: `Validate a configuration: every problem with its key path and line, exit status
1; else a summary of what it sets up, exit status 0.`,
		example: "occupancyd check --config /etc/occupancyd/occupancyd.yaml",
	},
	"import": {
		usage: "import --config FILE [--progress N] EVENTS...",
		about: `Backfill history while the daemon is stopped (a store in use is refused). EVENTS
is CSV with the header timestamp,direction,dpu_id (an id column is optional) or JSON
lines of event objects with a "dpu" field, plain or gzip-compressed; - reads
standard input. Rows count once, against each other and against stored events; the
timeline and settled rows are recomputed from the earliest imported ts. Prints a
summary with every rejected row's line number and reason.`,
		example: "occupancyd import --config /etc/occupancyd/occupancyd.yaml --progress 50000 export.csv",
	},
	"install": {
		usage: "install [--config FILE]",
		about: `Install the system service (needs root) that runs this binary with FILE, and
enable it. The configuration is checked first. On systemd this is the hardened unit
of systemd/occupancyd.service (user occupancyd, data below /var/lib/occupancyd,
Type=notify with a watchdog) in /etc/systemd/system/occupancyd.service; a relative
storage.dir is taken from /var/lib/occupancyd. Elsewhere (SysV init, launchd) it is
the service manager's own kind of service, run in the current directory. Where the
occupancyd package installed the service, use systemctl instead.`,
		example: "sudo occupancyd install --config /etc/occupancyd/occupancyd.yaml",
	},
	"uninstall": {
		usage:   "uninstall [--config FILE]",
		about:   `Stop and remove the system service that install installed (needs root). The data stays.`,
		example: "sudo occupancyd uninstall",
	},
	"start": {
		usage:   "start [--config FILE]",
		about:   `Start the installed system service (needs root); same as systemctl start occupancyd.`,
		example: "sudo occupancyd start",
	},
	"stop": {
		usage:   "stop [--config FILE]",
		about:   `Stop the installed system service (needs root): a clean stop within 10 s.`,
		example: "sudo occupancyd stop",
	},
	"restart": {
		usage:   "restart [--config FILE]",
		about:   `Restart the installed system service (needs root).`,
		example: "sudo occupancyd restart",
	},
	"status": {
		usage: "status [--config FILE]",
		about: `Print the system service's state: running (exit status 0), stopped (3) or not
installed (4).`,
		example: "occupancyd status; echo $?",
	},
	"version": {
		usage: "version [--short]",
		about: `Print the semantic version (from the release tag; 0.0.0-dev+COMMIT for an untagged
build), the commit and the Go version it was built with.`,
		example: "occupancyd version",
	},
}

// helpRequest is returned by parseCommandFlags for --help/-h: dispatch prints the
// command's help to stdout and exits 0.
type helpRequest struct{ fs *flag.FlagSet }

func (h *helpRequest) Error() string { return h.fs.Name() + ": help requested" }

// writeCommandHelp prints a command's usage, what it does, its flags with their
// defaults, and an example.
func writeCommandHelp(w io.Writer, fs *flag.FlagSet) {
	h := commandHelps[fs.Name()]
	fmt.Fprintf(w, "Usage: occupancyd %s\n\n%s\n", h.usage, h.about)
	var flags []string
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if name != "" {
			left += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" {
			usage += " (default " + f.DefValue + ")"
		}
		flags = append(flags, flagLine(left, usage))
	})
	flags = append(flags, flagLine("-h, --help", "print this help"))
	fmt.Fprintf(w, "\nFlags:\n%s\n", strings.Join(flags, "\n"))
	fmt.Fprintf(w, "\nExample:\n  %s\n", h.example)
}

// flagLine is one flag in the help: its name column, then its description wrapped
// at 80 columns.
func flagLine(left, usage string) string {
	const col, width = 20, 80
	var b strings.Builder
	b.WriteString("  " + left)
	n := 2 + len(left)
	if n >= col {
		b.WriteString("\n" + strings.Repeat(" ", col))
		n = col
	} else {
		b.WriteString(strings.Repeat(" ", col-n))
		n = col
	}
	for i, word := range strings.Fields(usage) {
		if i > 0 && n+1+len(word) > width {
			b.WriteString("\n" + strings.Repeat(" ", col))
			n = col
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// commandUsageErrorf is a mistake on a command's command line: exit status 2 with a
// pointer to that command's help.
func commandUsageErrorf(cmd, format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...) + " (see occupancyd " + cmd + " --help)"}
}
