package main

import (
	"bufio"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of a cgroup memory limit given to the Go runtime as
// its soft limit; the rest is for what the runtime does not count (Badger's
// memory-mapped tables and logs, the binary).
const memoryLimitShare = 0.85

// applyMemoryLimit gives the Go runtime a soft memory limit for `run`: unless
// GOMEMLIMIT is set (the runtime has then applied it already), 85% of the memory
// limit of the process's cgroup — systemd's MemoryMax=, a container's memory limit.
// Without it the heap may grow to twice the live data before a collection (GOGC
// 100), so a service near its MemoryMax would be OOM-killed where collecting earlier
// would have been enough. It is a soft limit: the GC works harder as the heap nears
// it, it never fails an allocation. It returns the limit set (0: none) and why.
func applyMemoryLimit() (int64, string) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		return debug.SetMemoryLimit(-1), "GOMEMLIMIT=" + v
	}
	limit, path := cgroupMemoryLimit("/")
	if limit <= 0 {
		return 0, "no cgroup memory limit"
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft, path
}

// logMemoryLimit applies the soft memory limit and says which one.
func logMemoryLimit(m *Main) {
	limit, why := applyMemoryLimit()
	e := m.Logger.Info().Str("source", why)
	if limit > 0 && limit < math.MaxInt64 {
		e = e.Int64("memory_limit_mib", limit>>20)
	}
	e.Msg("go runtime memory limit")
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
