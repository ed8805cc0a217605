package main

import (
	"os"
	"path/filepath"
	"testing"
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
