package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/occupancyd/occupancyd/gateway/config"
)

func TestCgroupMemoryLimit(t *testing.T) {
	type file struct{ path, body string }
	cases := []struct {
		name  string
		files []file
		want  int64
		where string // suffix of the file the limit came from
	}{
		{name: "no cgroup file"},
		{name: "v2 unlimited", files: []file{
			{"proc/self/cgroup", "0::/system.slice/occupancyd.service\n"},
			{"sys/fs/cgroup/system.slice/occupancyd.service/memory.max", "max\n"},
			{"sys/fs/cgroup/system.slice/memory.max", "max\n"},
		}},
		{name: "v2 MemoryMax", want: 1 << 30, where: "occupancyd.service/memory.max", files: []file{
			{"proc/self/cgroup", "0::/system.slice/occupancyd.service\n"},
			{"sys/fs/cgroup/system.slice/occupancyd.service/memory.max", "1073741824\n"},
			{"sys/fs/cgroup/system.slice/memory.max", "max\n"},
		}},
		{name: "v2 the parent's is smaller", want: 512 << 20, where: "system.slice/memory.max", files: []file{
			{"proc/self/cgroup", "0::/system.slice/occupancyd.service\n"},
			{"sys/fs/cgroup/system.slice/occupancyd.service/memory.max", "1073741824\n"},
			{"sys/fs/cgroup/system.slice/memory.max", "536870912\n"},
		}},
		{name: "v2 hybrid (unified)", want: 2 << 30, where: "unified/system.slice/x.service/memory.max", files: []file{
			{"proc/self/cgroup", "1:name=systemd:/system.slice/x.service\n0::/system.slice/x.service\n"},
			{"sys/fs/cgroup/unified/system.slice/x.service/memory.max", "2147483648\n"},
		}},
		{name: "v1 unlimited", files: []file{
			{"proc/self/cgroup", "4:memory:/docker/abc\n0::/\n"},
			{"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "9223372036854771712\n"},
			{"sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"},
		}},
		{name: "v1 container limit", want: 3 << 30, where: "docker/abc/memory.limit_in_bytes", files: []file{
			{"proc/self/cgroup", "5:cpuacct,cpu:/docker/abc\n4:memory:/docker/abc\n"},
			{"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "3221225472\n"},
			{"sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"},
		}},
		{name: "garbage", files: []file{
			{"proc/self/cgroup", "0::/a\n"},
			{"sys/fs/cgroup/a/memory.max", "lots\n"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				p := filepath.Join(root, f.path)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(f.body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, where := cgroupMemoryLimit(root)
			if got != tc.want {
				t.Errorf("limit: got %d, want %d (from %q)", got, tc.want, where)
			}
			if tc.where != "" && (len(where) < len(tc.where) || where[len(where)-len(tc.where):] != tc.where) {
				t.Errorf("from %q, want a path ending in %q", where, tc.where)
			}
		})
	}
}

func TestApplyMemoryLimit(t *testing.T) {
	oldLimit, oldGC := debug.SetMemoryLimit(-1), debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetMemoryLimit(oldLimit); debug.SetGCPercent(oldGC) })
	cgroup := t.TempDir()
	for p, body := range map[string]string{
		"proc/self/cgroup": "0::/system.slice/occupancyd.service\n",
		"sys/fs/cgroup/system.slice/occupancyd.service/memory.max": "1073741824\n",
	} {
		p = filepath.Join(cgroup, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		name      string
		ml        config.MemoryLimit
		getenv    func(string) string
		root      string
		limit     int64 // want; -1: whatever GOMEMLIMIT set
		limitFrom string
		gc        int // want the GC percent set (0: unchanged)
	}{
		{"auto without a cgroup limit", config.MemoryLimitAuto, env(), t.TempDir(), 0, "", autoGCPercent},
		{"auto under MemoryMax", config.MemoryLimitAuto, env(), cgroup, int64(1<<30) * 85 / 100, "occupancyd.service/memory.max", autoGCPercent},
		{"a size", 900 << 20, env(), cgroup, 900 << 20, "gateway.memory_limit", 0},
		{"off", config.MemoryLimitOff, env(), cgroup, 0, "", 0},
		{"the environment wins", config.MemoryLimitAuto, env("GOMEMLIMIT", "700MiB", "GOGC", "50"), cgroup, -1, "GOMEMLIMIT=700MiB", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			debug.SetGCPercent(100)
			s := applyMemoryLimit(c.ml, c.getenv, c.root)
			if c.limit >= 0 && s.limit != c.limit {
				t.Errorf("limit: got %d, want %d", s.limit, c.limit)
			}
			if !strings.HasSuffix(s.limitFrom, c.limitFrom) || (c.limitFrom == "") != (s.limitFrom == "") {
				t.Errorf("limit from: got %q, want %q", s.limitFrom, c.limitFrom)
			}
			want := int64(math.MaxInt64)
			if c.limit > 0 {
				want = c.limit
			}
			if got := debug.SetMemoryLimit(-1); c.limit >= 0 && got != want {
				t.Errorf("runtime memory limit: got %d, want %d", got, want)
			}
			wantGC := 100
			if c.gc > 0 {
				wantGC = c.gc
			}
			if got := debug.SetGCPercent(100); got != wantGC || s.gcPercent != c.gc {
				t.Errorf("GC percent: runtime %d (want %d), reported %d (want %d)", got, wantGC, s.gcPercent, c.gc)
			}
		})
	}
}
