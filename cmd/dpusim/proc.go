package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// proc is a child process (Mosquitto or occupancyd) with its output in a log file.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startProc(name, logPath string, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits (SIGKILL after the grace period).
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s exited early: %v", p.name, p.err)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s of SIGTERM; killed", p.name, grace)
	}
}

// tail returns the last lines of the process log (for error messages).
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if hexDumpLine.MatchString(l) {
			continue // Badger quotes whole values as hex dumps
		}
		if len(l) > 600 {
			l = l[:600] + "..."
		}
		lines = append(lines, l)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var hexDumpLine = regexp.MustCompile(`^[0-9a-f]{8}  `)

// mosquittoConf is the broker configured for a gateway (DESIGN 4).
func mosquittoConf(port, dir string) string {
	return fmt.Sprintf(`listener %s 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 1000000
persistence true
persistence_location %s/
log_dest stderr
log_type error
log_type warning
`, port, dir)
}

func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", nil
	}
	return "", errors.New("mosquitto not found on PATH or in /usr/sbin")
}

// startMosquitto runs a Mosquitto on a free loopback port; it returns the broker URL.
func startMosquitto(bin, dir string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "mosquitto.conf")
	data := filepath.Join(dir, "mosquitto-data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, "", fmt.Errorf("start mosquitto: %w", err)
	}
	if err := os.WriteFile(conf, []byte(mosquittoConf(port, data)), 0o644); err != nil {
		return nil, "", fmt.Errorf("start mosquitto: %w", err)
	}
	p, err := startProc("mosquitto", filepath.Join(dir, "mosquitto.log"), bin, "-c", conf)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return p, "tcp://" + addr, nil
		}
		if p.exited() || time.Now().After(deadline) {
			_ = p.stop(time.Second)
			return nil, "", fmt.Errorf("mosquitto did not listen on %s: %v\n%s", addr, err, p.tail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady polls GET base/readyz until 200.
func waitReady(ctx context.Context, base string, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before it was ready: %v\n%s", p.name, p.err, p.tail(30))
		}
		if time.Now().After(deadline) {
			msg := ""
			if p != nil {
				msg = "\n" + p.tail(30)
			}
			return fmt.Errorf("%s/readyz not 200 after %s (last: %v)%s", base, timeout, err, msg)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// metrics reads unlabelled samples from a Prometheus text endpoint in one request;
// a name missing from it is missing from the map.
func metrics(base string, names ...string) (map[string]float64, error) {
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("get metrics: %w", err)
	}
	defer func() {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

// metric reads one unlabelled sample from a Prometheus text endpoint.
func metric(base, name string) (float64, error) {
	m, err := metrics(base, name)
	if err != nil {
		return 0, err
	}
	v, ok := m[name]
	if !ok {
		return 0, fmt.Errorf("metric %s not found at %s/metrics", name, base)
	}
	return v, nil
}

// procStat is CPU time and peak memory of a process from /proc.
type procStat struct {
	CPU time.Duration // user + system
	HWM int64         // peak resident set, bytes (VmHWM)
}

func readProcStat(pid int) procStat {
	var s procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s
	}
	// Fields after the parenthesised command name: state is field 3; utime 14, stime 15.
	str := string(b)
	i := strings.LastIndexByte(str, ')')
	if i < 0 {
		return s
	}
	f := strings.Fields(str[i+1:])
	if len(f) < 13 {
		return s
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPU = time.Duration(ut+st) * time.Second / clkTck
	st2, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s
	}
	for _, line := range strings.Split(string(st2), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			s.HWM = n * 1024
			break
		}
	}
	return s
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports.
const clkTck = 100

// moduleRoot finds the directory of this module's go.mod from the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/occupancyd/occupancyd") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the occupancyd module: pass --occupancyd PATH")
		}
		dir = parent
	}
}

// buildOccupancyd builds the daemon into dir.
func buildOccupancyd(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "occupancyd")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", out, "./cmd/occupancyd")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/occupancyd: %w\n%s", err, b)
	}
	return out, nil
}
