// Package sdnotify speaks systemd's service notification protocol (sd_notify(3)):
// datagrams of newline-separated VAR=VALUE assignments to the unix socket named by
// $NOTIFY_SOCKET, which systemd sets for a Type=notify service. A name starting with
// '@' is an abstract socket. Without $NOTIFY_SOCKET (run by hand, in a container,
// under another service manager) every call is a no-op, so callers need no checks.
//
// Supervise runs the notifications a daemon owes systemd: READY=1 once it is ready,
// STATUS= lines for `systemctl status`, and WATCHDOG=1 only while the daemon's own
// liveness check passes, so that a hung daemon is restarted (WatchdogSec=).
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notification states (sd_notify(3)).
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Watchdog  = "WATCHDOG=1"
	reloading = "RELOADING=1"
)

// Notifier sends notifications to one socket. The nil Notifier is valid and sends
// nothing.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns a Notifier for the socket address as systemd gives it in
// $NOTIFY_SOCKET: a path, or '@' and an abstract name. An empty address gives the
// nil Notifier (notifications off).
func New(socket string) (*Notifier, error) {
	switch {
	case socket == "":
		return nil, nil
	case socket[0] == '/' || socket[0] == '@':
		// Go's net package maps a leading '@' to the abstract namespace (Linux).
		return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
	default:
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: not a unix socket path or abstract name", socket)
	}
}

// FromEnv is New($NOTIFY_SOCKET).
func FromEnv() (*Notifier, error) { return New(os.Getenv("NOTIFY_SOCKET")) }

// Enabled reports whether n sends anything.
func (n *Notifier) Enabled() bool { return n != nil }

// Notify sends the states as one datagram (sd_notify(3): "READY=1",
// "STATUS=...", ...). A state may not contain a newline; a STATUS line with one is
// cut there.
func (n *Notifier) Notify(states ...string) error {
	if n == nil || len(states) == 0 {
		return nil
	}
	var b strings.Builder
	for _, s := range states {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[:i]
		}
		b.WriteString(s)
		b.WriteByte('\n')
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// Status is the STATUS= assignment for a line `systemctl status` shows.
func Status(line string) string { return "STATUS=" + line }

// Reloading are the states that say a reload began: RELOADING=1 with the
// CLOCK_MONOTONIC time systemd expects beside it (Type=notify-reload requires it;
// Type=notify shows "reloading" until the next READY=1).
func Reloading() []string {
	if us, ok := monotonicMicros(); ok {
		return []string{reloading, "MONOTONIC_USEC=" + strconv.FormatUint(us, 10)}
	}
	return []string{reloading}
}

// WatchdogTimeout is the watchdog timeout systemd set for this process
// ($WATCHDOG_USEC, WatchdogSec= in the unit), or 0 when there is none or it is
// meant for another process ($WATCHDOG_PID).
func WatchdogTimeout() (time.Duration, error) {
	return watchdogTimeout(os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID"), os.Getpid())
}

func watchdogTimeout(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil {
			return 0, fmt.Errorf("WATCHDOG_PID %q: %w", pid, err)
		}
		if p != self {
			return 0, nil
		}
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("WATCHDOG_USEC %q: %w", usec, err)
	}
	if us == 0 {
		return 0, errors.New("WATCHDOG_USEC is 0")
	}
	return time.Duration(us) * time.Microsecond, nil
}
