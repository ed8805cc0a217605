package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"

	"github.com/kardianos/service"

	"github.com/occupancyd/occupancyd/gateway/config"
)

// defaultServiceConfig is the configuration the installed service runs with unless
// install is given --config (the path systemd/occupancyd.service uses too).
const defaultServiceConfig = "/etc/occupancyd/occupancyd.yaml"

// serviceName is the system service's name (systemd unit occupancyd.service).
const serviceName = "occupancyd"

// serviceConfig describes the system service for kardianos/service: it runs
// `occupancyd run --config <abs path>` from workDir (where a relative storage.dir
// resolves), restarts on failure and reloads on SIGHUP.
func serviceConfig(configPath, workDir string) *service.Config {
	return &service.Config{
		Name:             serviceName,
		DisplayName:      "occupancyd",
		Description:      "occupancyd: MQTT gateway for people-counting sensors (occupancy per space)",
		Arguments:        []string{"run", "--config", configPath},
		WorkingDirectory: workDir,
		Dependencies:     []string{"After=network-online.target", "Wants=network-online.target"},
		Option: service.KeyValue{
			"Restart":      "on-failure",
			"ReloadSignal": "HUP",
			"LimitNOFILE":  65536,
			"OnFailure":    "restart", // Windows
		},
	}
}

// serviceConfigUsage is the --config flag's help for a service command.
func serviceConfigUsage(action string) string {
	if action == "install" {
		return "the configuration `FILE` the service runs with (checked first)"
	}
	return "the configuration `FILE` given to install (the service is found by its name)"
}

// serviceCommand is `occupancyd install|uninstall|start|stop|restart|status`.
func serviceCommand(action string, args []string, stdout io.Writer) error {
	fset := flag.NewFlagSet(action, flag.ContinueOnError)
	configPath := fset.String("config", defaultServiceConfig, serviceConfigUsage(action))
	pos, err := parseCommandFlags(fset, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return commandUsageErrorf(action, "%s: unexpected argument %q", action, pos[0])
	}
	abs, err := filepath.Abs(*configPath)
	if err != nil {
		return fmt.Errorf("%s: config path: %w", action, err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("%s: working directory: %w", action, err)
	}
	onSystemd := service.ChosenSystem() != nil && service.ChosenSystem().String() == systemdPlatform
	svcConf := serviceConfig(abs, wd)
	var (
		cfg   config.Config
		exe   string
		notes []string
	)
	if action == "install" {
		// Refuse to install a service that could not start.
		if cfg, err = config.LoadConfig(abs); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if exe, err = executable(); err != nil {
			return fmt.Errorf("install: %w", err)
		}
		if onSystemd {
			// The hardened unit of systemd/occupancyd.service, not kardianos' own.
			if p := packagedUnit(); p != "" {
				return fmt.Errorf("install: the occupancyd package installed the service already (%s): use systemctl enable --now occupancyd", p)
			}
			unit, n, err := systemdUnit(exe, abs, cfg)
			if err != nil {
				return fmt.Errorf("install: %w", err)
			}
			svcConf.Option["SystemdScript"] = unit
			notes = n
		}
	}
	if action == "uninstall" && onSystemd {
		if _, err := os.Stat(systemdUnitPath); err != nil {
			if p := packagedUnit(); p != "" {
				return fmt.Errorf("uninstall: the service comes from the occupancyd package (%s): remove the package instead", p)
			}
		}
	}
	s, err := service.New(&serviceProgram{configPath: abs}, svcConf)
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	if action == "status" {
		st, err := s.Status()
		if err != nil && s.Platform() == "unix-systemv" {
			// kardianos' SysV script answers "Stopped" with exit status 1.
			if _, serr := os.Stat(sysvScript); serr != nil {
				st, err = service.StatusUnknown, service.ErrNotInstalled
			} else {
				st, err = service.StatusStopped, nil
			}
		}
		switch {
		case errors.Is(err, service.ErrNotInstalled):
			fmt.Fprintln(stdout, "occupancyd: not installed")
			return &exitError{code: 4}
		case err != nil:
			return fmt.Errorf("status: %w", err)
		case st == service.StatusRunning:
			fmt.Fprintln(stdout, "occupancyd: running")
			return nil
		case st == service.StatusStopped:
			fmt.Fprintln(stdout, "occupancyd: stopped")
			return &exitError{code: 3}
		default:
			fmt.Fprintln(stdout, "occupancyd: status unknown")
			return &exitError{code: 4}
		}
	}
	if action == "uninstall" {
		_ = s.Stop() // a removed service must not keep running; not running is fine
	}
	if err := service.Control(s, action); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("%s: %w (run as root or with sudo)", action, err)
		}
		return fmt.Errorf("%s: %w", action, err)
	}
	if action == "uninstall" && s.Platform() == "unix-systemv" {
		removeSysvLinks()
	}
	switch action {
	case "install":
		if onSystemd {
			fmt.Fprintf(stdout, "occupancyd: service installed (%s): %s runs %s with config %s, hardened as systemd/occupancyd.service (user occupancyd)\n",
				s.Platform(), systemdUnitPath, exe, abs)
			fmt.Fprintf(stdout, "occupancyd: the service keeps its data in %s\n", serviceAbs(cfg.Storage.Dir))
			for _, n := range notes {
				fmt.Fprintln(stdout, "occupancyd: "+n)
			}
		} else {
			fmt.Fprintf(stdout, "occupancyd: service installed (%s), running %s with config %s in %s\n",
				s.Platform(), exe, abs, wd)
			if !filepath.IsAbs(cfg.Storage.Dir) {
				fmt.Fprintf(stdout, "occupancyd: storage.dir %q is relative: the service keeps its data in %s\n",
					cfg.Storage.Dir, filepath.Join(wd, cfg.Storage.Dir))
			}
		}
		fmt.Fprintln(stdout, "occupancyd: start it with: occupancyd start")
	default:
		fmt.Fprintf(stdout, "occupancyd: %s done\n", action)
	}
	return nil
}

// runService is `occupancyd run`. Interactively, and wherever the service manager
// speaks to its service with signals only (systemd, launchd, SysV, ...), that is
// runCommand with its signal handling. Under a service manager with its own control
// protocol (the Windows service control manager), kardianos/service runs a
// serviceProgram.
func runService(args []string) error {
	if runtime.GOOS != "windows" || service.Interactive() {
		return runCommand(args)
	}
	fset := flag.NewFlagSet("run", flag.ContinueOnError)
	configPath := fset.String("config", "", "configuration file (YAML)")
	if _, err := parseCommandFlags(fset, args); err != nil {
		return err
	}
	wd, _ := os.Getwd()
	s, err := service.New(&serviceProgram{configPath: *configPath}, serviceConfig(*configPath, wd))
	if err != nil {
		return runCommand(args)
	}
	return s.Run()
}

// serviceProgram is the daemon as a kardianos/service program: Start builds a Main
// from the configuration file and runs it (Run returns once started), Stop closes it.
// While it runs, SIGHUP reloads the configuration; once stopping, a second stop
// signal exits without draining.
type serviceProgram struct {
	configPath string
	stderr     io.Writer // logs; default os.Stderr

	mu   sync.Mutex
	main *Main
	hup  chan os.Signal
	quit chan struct{}
}

func (p *serviceProgram) Start(s service.Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.main != nil {
		return errors.New("service already started")
	}
	w := p.stderr
	if w == nil {
		w = os.Stderr
	}
	m, err := newMainFromFile(p.configPath, w)
	if err != nil {
		return err
	}
	logMemoryLimit(m)
	if err := m.Run(context.Background()); err != nil {
		return err
	}
	p.main = m
	p.hup = make(chan os.Signal, 1)
	p.quit = make(chan struct{})
	signal.Notify(p.hup, syscall.SIGHUP)
	go func(hup <-chan os.Signal, quit <-chan struct{}) {
		for {
			select {
			case <-hup:
				_ = m.Reload() // logged; the running config stays on error
			case <-quit:
				return
			}
		}
	}(p.hup, p.quit)
	return nil
}

func (p *serviceProgram) Stop(s service.Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.main == nil {
		return nil
	}
	signal.Stop(p.hup)
	close(p.quit)
	// A second stop signal while draining exits at once.
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(again)
	done := make(chan error, 1)
	m := p.main
	go func() { done <- m.Close() }()
	p.main = nil
	select {
	case err := <-done:
		return err
	case sig := <-again:
		m.Logger.Warn().Str("signal", sig.String()).Msg("second signal: exiting without draining")
		os.Exit(1)
		return nil
	}
}

// systemdPlatform is kardianos/service's name for systemd, and systemdUnitPath where
// it installs the unit.
const (
	systemdPlatform = "linux-systemd"
	systemdUnitPath = "/etc/systemd/system/" + serviceName + ".service"
)

// executable is this binary's path with symlinks resolved (what the service runs).
func executable() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("this binary's path: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return exe, nil
}

// sysvScript is where kardianos/service installs the SysV init script.
const sysvScript = "/etc/init.d/" + serviceName

// removeSysvLinks removes the /etc/rc?.d links to the SysV init script, which
// kardianos/service creates on install but leaves behind on uninstall.
func removeSysvLinks() {
	links, _ := filepath.Glob("/etc/rc[0-6S].d/[SK][0-9][0-9]" + serviceName)
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && target == sysvScript {
			_ = os.Remove(l)
		}
	}
}
