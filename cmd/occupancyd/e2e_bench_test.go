package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// benchPublish publishes n unique QoS 1 events over conns connections and waits for
// every PUBACK.
func benchPublish(b *testing.B, url string, n, conns int, tag string) {
	benchPublishDPUs(b, url, n, conns, tag, []string{"d1", "d2", "d3", "d4", "d5", "d6"})
}

func benchPublishDPUs(b *testing.B, url string, n, conns int, tag string, dpus []string) {
	reorder, _ := strconv.ParseFloat(os.Getenv("BENCH_REORDER"), 64)
	b.Helper()
	var wg sync.WaitGroup
	for c := 0; c < conns; c++ {
		cl := mqttClient(b, url, fmt.Sprintf("bench-pub-%s-%d-%d", tag, c, time.Now().UnixNano()))
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			toks := make([]paho.Token, 0, 1024)
			for i := c; i < n; i += conns {
				dpu := dpus[(i*7919)%len(dpus)]
				ts := time.Now().UnixMilli()
				if reorder > 0 && i%100 < int(reorder*100) {
					ts -= int64(i*7919) % 2000 // held back up to 2 s, like dpusim --reorder
				}
				payload := fmt.Sprintf(`{"id":%d,"ts":%d,"direction":1}`, i, ts)
				toks = append(toks, cl.Publish("dpu/"+dpu+"/events", 1, false, payload))
				if len(toks) == cap(toks) {
					for _, t := range toks {
						t.Wait()
					}
					toks = toks[:0]
				}
			}
			for _, t := range toks {
				t.Wait()
			}
		}(c)
	}
	wg.Wait()
}

// BenchmarkIngestMosquitto puts the same QoS 1 load through Mosquitto (configured as
// DESIGN 4 says) to a do-nothing QoS 1 subscriber and to occupancyd, and reports
// events/s of each. Run: go test -run '^$' -bench IngestMosquitto -benchtime 20000x ./cmd/occupancyd/
func BenchmarkIngestMosquitto(b *testing.B) {
	const conns = 4
	b.Run("subscriber", func(b *testing.B) {
		mq := newMosquitto(b)
		url := "tcp://" + mq.addr
		var got atomic.Int64
		o := paho.NewClientOptions().AddBroker(url).SetClientID("do-nothing").SetCleanSession(false).
			SetOrderMatters(false)
		sub := paho.NewClient(o)
		if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
		defer sub.Disconnect(50)
		if tok := sub.Subscribe("dpu/+/events", 1, func(paho.Client, paho.Message) { got.Add(1) }); !tok.WaitTimeout(10 * time.Second) {
			b.Fatal("subscribe timed out")
		}
		b.ResetTimer()
		start := time.Now()
		benchPublish(b, url, b.N, conns, "sub")
		for got.Load() < int64(b.N) {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})
	b.Run("occupancyd", func(b *testing.B) {
		mq := newMosquitto(b)
		dir := b.TempDir()
		path := filepath.Join(dir, "occupancyd.yaml")
		writeConfig(b, path, e2eConfig{broker: "tcp://" + mq.addr, dir: filepath.Join(dir, "data"), settleAfter: "5m", maxParked: 1000})
		d := startMain(b, path)
		accepted := d.main.Metrics().EventsAccepted
		base := counterValue(accepted)
		b.ResetTimer()
		start := time.Now()
		benchPublish(b, d.brokerURL, b.N, conns, "gw")
		for counterValue(accepted)-base < float64(b.N) {
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		var h dto.Metric
		if err := d.main.Metrics().IngestBatch.Write(&h); err == nil && h.GetHistogram().GetSampleCount() > 0 {
			n := float64(h.GetHistogram().GetSampleCount())
			b.ReportMetric(h.GetHistogram().GetSampleSum()/n*1000, "ms/batch")
			b.ReportMetric(float64(b.N)/n, "msgs/batch")
		}
	})
}

// campusTopology is a synthetic campus: sites > 3 floors > 10 rooms, dpusPerSite
// DPUs per site (street doors, room doors, stairs).
func campusTopology(sites, dpusPerSite int) e2eTopo {
	var tp e2eTopo
	for s := 0; s < sites; s++ {
		site := fmt.Sprintf("s%d", s)
		tp.spaces = append(tp.spaces, e2eSpace{site, "Site " + site, ""})
		var rooms, floors []string
		for f := 0; f < 3; f++ {
			floor := fmt.Sprintf("%s-f%d", site, f)
			floors = append(floors, floor)
			tp.spaces = append(tp.spaces, e2eSpace{floor, floor, site})
			for r := 0; r < 10; r++ {
				room := fmt.Sprintf("%s-r%d", floor, r)
				rooms = append(rooms, room)
				tp.spaces = append(tp.spaces, e2eSpace{room, room, floor})
			}
		}
		for d := 0; d < dpusPerSite; d++ {
			id := fmt.Sprintf("%s-d%d", site, d)
			switch {
			case d < 2:
				tp.dpus = append(tp.dpus, e2eDPU{id, floors[0], ""})
			case d < 4:
				tp.dpus = append(tp.dpus, e2eDPU{id, floors[d-1], floors[0]})
			default:
				room := rooms[(d-4)%len(rooms)]
				tp.dpus = append(tp.dpus, e2eDPU{id, room, floors[((d-4)%len(rooms))/10]})
			}
		}
	}
	return tp
}

// BenchmarkIngestCampus is BenchmarkIngestMosquitto's occupancyd leg on a campus of
// 200 sites x 50 DPUs (10,000 DPUs, 6,800 spaces).
func BenchmarkIngestCampus(b *testing.B) {
	tp := campusTopology(200, 50)
	mq := newMosquitto(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(b, path, e2eConfig{broker: "tcp://" + mq.addr, dir: filepath.Join(dir, "data"), settleAfter: "5m", topology: tp.yaml(), tick: os.Getenv("BENCH_TICK")})
	d := startMain(b, path)
	accepted := d.main.Metrics().EventsAccepted
	base := counterValue(accepted)
	var dpus []string
	for _, x := range tp.dpus {
		dpus = append(dpus, x.id)
	}
	b.ResetTimer()
	start := time.Now()
	benchPublishDPUs(b, d.brokerURL, b.N, 4, "campus", dpus)
	for counterValue(accepted)-base < float64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkRetainedLatency measures publish-to-retained-update latency at engine.tick
// 50ms (embedded broker): one event at a time, timed until its space's retained
// /count topic shows the new value.
func BenchmarkRetainedLatency(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "occupancyd.yaml")
	writeConfig(b, path, e2eConfig{dir: filepath.Join(dir, "data")})
	d := startMain(b, path)
	updates := make(chan string, 1024)
	sub := mqttClient(b, d.brokerURL, "lat-sub")
	sub.Subscribe("occupancy/r1a/count", 1, func(_ paho.Client, m paho.Message) { updates <- string(m.Payload()) }).Wait()
	pub := mqttClient(b, d.brokerURL, "lat-pub")
	// Drain the retained value.
	time.Sleep(100 * time.Millisecond)
	for len(updates) > 0 {
		<-updates
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := fmt.Sprint(i + 1)
		start := time.Now()
		pub.Publish("dpu/d2/events", 1, false, fmt.Sprintf(`{"id":%d,"ts":%d,"direction":1}`, i, time.Now().UnixMilli())).Wait()
		for v := range updates {
			if v == want {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// BenchmarkStartToReady100k is issue 5's start: a campus of 2,000 sites x 50 DPUs
// (100,000 DPUs, 66,000 spaces), from reading the config file to /readyz 200
// (embedded broker), with the topology in its own file (topology.file, 11 MB of JSON)
// and inline (14 MB of YAML) — on a fresh store (the topology is stored as a new
// version) and on a restart (it equals the stored one). Profile with
// go test -run='^$' -bench=StartToReady100k/file -benchtime=3x -cpuprofile cpu.out ./cmd/occupancyd/
func BenchmarkStartToReady100k(b *testing.B) {
	for _, kind := range []string{"file", "inline"} {
		b.Run(kind, func(b *testing.B) { benchStartToReady(b, kind == "file") })
	}
}

func benchStartToReady(b *testing.B, file bool) {
	dir := b.TempDir()
	path := filepath.Join(dir, "campus.yaml")
	tp := campusTopology(2000, 50)
	cfg := e2eConfig{dir: filepath.Join(dir, "data"), settleAfter: "5m", tick: "1s", topology: tp.yaml()}
	if file {
		writeTopologyFile(b, filepath.Join(dir, "campus.json"), tp.config())
		cfg.topology = "topology: {file: campus.json}\n"
	}
	writeConfig(b, path, cfg)
	var cpu time.Duration // of the whole process: load-independent beside the wall time
	start := func(b *testing.B) {
		cpu0 := processCPU(b)
		b.StartTimer()
		m, err := newMainFromFile(path, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		waitReady(b, m.HTTPAddr(), time.Minute)
		b.StopTimer()
		cpu += processCPU(b) - cpu0
		if err := m.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("fresh", func(b *testing.B) {
		b.StopTimer()
		cpu = 0
		defer func() { b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op") }()
		for i := 0; i < b.N; i++ {
			if err := os.RemoveAll(filepath.Join(dir, "data")); err != nil {
				b.Fatal(err)
			}
			start(b)
		}
	})
	b.Run("restart", func(b *testing.B) {
		b.StopTimer()
		cpu = 0
		defer func() { b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op") }()
		for i := 0; i < b.N; i++ {
			start(b)
		}
	})
}

// processCPU is the CPU time (user and system) the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
