package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kardianos/service"
)

// TestServiceLifecycle installs, starts, queries, stops and uninstalls the real
// system service through the built binary. It changes the host (the service
// manager's files), so it runs only as root with OCCUPANCYD_TEST_SERVICE=1.
func TestServiceLifecycle(t *testing.T) {
	if os.Getenv("OCCUPANCYD_TEST_SERVICE") != "1" || os.Geteuid() != 0 {
		t.Skip("installs a system service: set OCCUPANCYD_TEST_SERVICE=1 and run as root")
	}
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	if onSystemd := service.ChosenSystem().String() == systemdPlatform; onSystemd {
		// The hardened unit sees neither /tmp nor homes, and writes only below
		// /var/lib/occupancyd: binary and config in /opt, data relative to it.
		d, err := os.MkdirTemp("/opt", "occupancyd-test-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
		t.Cleanup(func() { os.RemoveAll(d) })
		dir, dataDir = d, filepath.Base(d)
		t.Cleanup(func() {
			os.RemoveAll(filepath.Join("/var/lib/occupancyd", dataDir))
			os.RemoveAll(filepath.Join("/var/lib/private/occupancyd", dataDir))
		})
	}
	bin := filepath.Join(dir, "occupancyd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	httpAddr := free()
	cfg := filepath.Join(dir, "occupancyd.yaml")
	doc := fmt.Sprintf("gateway: {id: svc}\nmqtt: {embedded: {listen: %q}}\nstorage: {dir: %q}\nhttp: {listen: %q}\ntopology:\n  spaces: [{id: hq, name: HQ}]\n",
		free(), dataDir, httpAddr)
	if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	occ := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	if out, code := occ("status"); code != 4 {
		t.Fatalf("status before install: %q exit %d, want not installed (4); is occupancyd installed on this host?", out, code)
	}
	// The SysV script logs to /var/log/occupancyd.{log,err}: remove them after if
	// this test made them.
	for _, l := range []string{"/var/log/occupancyd.log", "/var/log/occupancyd.err"} {
		if _, err := os.Stat(l); os.IsNotExist(err) {
			defer os.Remove(l)
		}
	}
	if out, code := occ("install", "--config", cfg); code != 0 {
		t.Fatalf("install: exit %d: %s", code, out)
	}
	defer func() {
		occ("stop")
		if out, code := occ("uninstall"); code != 0 {
			t.Errorf("uninstall: exit %d: %s", code, out)
		}
		if out, code := occ("status"); code != 4 {
			t.Errorf("status after uninstall: %q exit %d, want 4", out, code)
		}
		if links, _ := filepath.Glob("/etc/rc[0-6S].d/[SK][0-9][0-9]occupancyd"); len(links) > 0 {
			t.Errorf("uninstall left %v", links)
		}
	}()
	if out, code := occ("status"); code != 3 || !strings.Contains(out, "stopped") {
		t.Errorf("status after install: %q exit %d, want stopped (3)", out, code)
	}
	if out, code := occ("start"); code != 0 {
		t.Fatalf("start: exit %d: %s", code, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service is not ready after 20 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, code := occ("status"); code != 0 || !strings.Contains(out, "running") {
		t.Errorf("status: %q exit %d, want running (0)", out, code)
	}
	if out, code := occ("stop"); code != 0 {
		t.Errorf("stop: exit %d: %s", code, out)
	}
	time.Sleep(500 * time.Millisecond)
	if out, code := occ("status"); code != 3 {
		t.Errorf("status after stop: %q exit %d, want stopped (3)", out, code)
	}
	if _, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
		t.Errorf("HTTP still answers after stop")
	}
}
