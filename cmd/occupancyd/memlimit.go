package main

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/occupancyd/occupancyd/gateway/config"
)

// memoryLimitShare is the part of a cgroup memory limit given to the Go runtime as
// its soft limit; the rest is for what the runtime does not count (Badger's
// memory-mapped tables and logs, the binary).
const memoryLimitShare = 0.85

// autoGCPercent is the collector's target under gateway.memory_limit auto: a
// collection once the heap has grown by a quarter since the last one, instead of
// Go's default doubling (GOGC=100). The heap is mostly the engine's pending entries,
// which hold no pointers, so collecting more often costs little CPU; at 100,000
// DPUs the doubling alone was about 40% of the peak RSS (1,401 MiB).
const autoGCPercent = 25

// memorySettings is what applyMemoryLimit set: the soft limit (0: none), the GC
// percent (0: unchanged), and where each came from.
type memorySettings struct {
	limit     int64
	limitFrom string
	gcPercent int
	gcFrom    string
}

// applyMemoryLimit configures the Go runtime's memory use for `run` from
// gateway.memory_limit (ml) and the environment (getenv), reading the cgroup under
// root ("/" but in tests):
//   - a size: that soft limit;
//   - auto: under a cgroup memory limit (systemd MemoryMax=, a container's), a soft
//     limit of 85% of it; and GOGC=25 (see autoGCPercent);
//   - off: neither.
//
// GOMEMLIMIT and GOGC in the environment win (the runtime applied them already). A
// soft limit never fails an allocation: the collector works harder near it; without
// one a service near its MemoryMax would be OOM-killed where collecting earlier
// would have been enough.
func applyMemoryLimit(ml config.MemoryLimit, getenv func(string) string, root string) memorySettings {
	var s memorySettings
	switch v := getenv("GOMEMLIMIT"); {
	case v != "":
		s.limit, s.limitFrom = debug.SetMemoryLimit(-1), "GOMEMLIMIT="+v
	case ml > 0:
		s.limit, s.limitFrom = int64(ml), "gateway.memory_limit"
		debug.SetMemoryLimit(s.limit)
	case ml == config.MemoryLimitAuto:
		if limit, path := cgroupMemoryLimit(root); limit > 0 {
			s.limit, s.limitFrom = int64(float64(limit)*memoryLimitShare), path
			debug.SetMemoryLimit(s.limit)
		}
	}
	switch v := getenv("GOGC"); {
	case v != "":
		s.gcFrom = "GOGC=" + v
	case ml == config.MemoryLimitAuto:
		s.gcPercent, s.gcFrom = autoGCPercent, "gateway.memory_limit auto"
		debug.SetGCPercent(autoGCPercent)
	}
	return s
}

// logMemoryLimit applies gateway.memory_limit and says what it set.
func logMemoryLimit(m *Main) {
	s := applyMemoryLimit(m.Config.Gateway.MemoryLimit, os.Getenv, "/")
	e := m.Logger.Info()
	if s.limit > 0 && s.limit < math.MaxInt64 {
		e = e.Int64("memory_limit_mib", s.limit>>20).Str("limit_from", s.limitFrom)
	} else {
		e = e.Str("memory_limit", "none")
	}
	if s.gcPercent > 0 {
		e = e.Int("gc_percent", s.gcPercent)
	}
	if s.gcFrom != "" {
		e = e.Str("gc_from", s.gcFrom)
	}
	e.Msg("go runtime memory")
}

// cgroupMemoryLimit is the memory limit of this process's cgroup (cgroup v2
// memory.max, else v1 memory.limit_in_bytes; the smallest along the path up to the
// root), read under root ("/" but in tests); 0 when there is none.
func cgroupMemoryLimit(root string) (int64, string) {
	f, err := os.Open(filepath.Join(root, "proc/self/cgroup"))
	if err != nil {
		return 0, ""
	}
	defer f.Close()
	var v2, v1 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1 = parts[2]
		}
	}
	cg := filepath.Join(root, "sys/fs/cgroup")
	if v1 != "" {
		if l, p := smallestLimit(filepath.Join(cg, "memory"), v1, "memory.limit_in_bytes"); l > 0 {
			return l, p
		}
	}
	if v2 != "" {
		if l, p := smallestLimit(cg, v2, "memory.max"); l > 0 {
			return l, p
		}
		return smallestLimit(filepath.Join(cg, "unified"), v2, "memory.max")
	}
	return 0, ""
}

// smallestLimit reads file in dir/cgPath and each parent up to dir and returns the
// smallest limit ("max" and v1's near-2^63 "unlimited" are none).
func smallestLimit(dir, cgPath, file string) (int64, string) {
	var best int64
	var where string
	for p := filepath.Clean("/" + cgPath); ; p = filepath.Dir(p) {
		full := filepath.Join(dir, p, file)
		if b, err := os.ReadFile(full); err == nil {
			s := strings.TrimSpace(string(b))
			if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && n < 1<<60 && (best == 0 || n < best) {
				best, where = n, full
			}
		}
		if p == "/" {
			return best, where
		}
	}
}
