package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/occupancyd/occupancyd/gateway/config"
	"github.com/occupancyd/occupancyd/occupancy"
)

// TopoOptions are the knobs of `dpusim topology`.
type TopoOptions struct {
	Sites       int
	DPUsPerSite int
	Seed        uint64

	// SiteTopics makes the config subscribe to `+/dpu/+/events` (DPUs publish under
	// their site, DESIGN 9); with a shard selected, to one `<site>/dpu/+/events`
	// filter per owned site.
	SiteTopics bool
	// Shard K of Shards (1-based): only the sites of that shard. 0 = all sites.
	Shard, Shards int
	// Probe adds a quiet site "probe" (one room, one DPU "probe-d1") that the
	// simulator never loads; `dpusim bench` times publish-to-retained on it.
	Probe bool

	GatewayID      string
	Broker         string
	EmbeddedListen string
	HTTPListen     string
	StorageDir     string
	SettleAfter    time.Duration
	Tick           time.Duration
	LogLevel       string
	HomeAssistant  bool
	// TopologyFile, when set, is where the topology goes as JSON; the config refers
	// to it as written (topology: {file: ...}), and occupancyd reads a relative path
	// from the config file's directory.
	TopologyFile string
	// Kinds gives each DPU a report kind (DESIGN 2a) by these shares, written as
	// its kind; half the interval and cumulative DPUs get a map of their own.
	Kinds KindSpec
	// HTTPToken is http.token (HTTP push and write routes need it).
	HTTPToken string
}

// DefaultTopoOptions are the flag defaults.
func DefaultTopoOptions() TopoOptions {
	return TopoOptions{
		Sites: 10, DPUsPerSite: 50, Seed: 1,
		GatewayID:      "campus",
		EmbeddedListen: "127.0.0.1:1883",
		HTTPListen:     "127.0.0.1:8080",
		StorageDir:     "./data",
		SettleAfter:    5 * time.Minute,
		Tick:           time.Second,
		LogLevel:       "info",
		HomeAssistant:  true,
	}
}

// Probe ids, see TopoOptions.Probe.
const (
	probeSite = "probe"
	probeRoom = "probe-r1"
	probeDPU  = "probe-d1"
)

// Site is one generated site of the campus.
type Site struct {
	ID       string
	Spaces   []occupancy.SpaceConfig
	Doorways []occupancy.DoorwayConfig
	DPUs     []occupancy.DPUConfig
}

// siteWidth is the number of digits of site numbers: ids sort in site order.
func siteWidth(n int) int {
	w := len(strconv.Itoa(n))
	if w < 4 {
		w = 4
	}
	return w
}

// SiteID is the id of site i (0-based).
func SiteID(i, sites int) string {
	return fmt.Sprintf("s%0*d", siteWidth(sites), i+1)
}

// siteRNG gives each site its own stream so a shard's sites are exactly the sites of
// the full campus, whatever else is selected.
func siteRNG(seed uint64, site int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(site)*0x9E3779B97F4A7C15+1))
}

// GenerateSite builds site i of a campus of `sites` sites with m DPUs: floors of up
// to 10 rooms; a spanning tree of doorways (an entrance into the lobby, corridors
// between neighbouring rooms, stairs between floors) and the remaining DPUs as extra
// entrances from the outside or doorways between random rooms. One DPU per doorway;
// some DPUs face the other way (plus and minus swapped).
func GenerateSite(seed uint64, i, sites, m int) Site {
	r := siteRNG(seed, i)
	sid := SiteID(i, sites)
	s := Site{ID: sid}
	rooms := (m*3 + 4) / 5 // ceil(0.6 m): at least one room, never more rooms than DPUs
	if rooms < 1 {
		rooms = 1
	}
	floors := (rooms + 9) / 10
	roomID := func(k int) string { return fmt.Sprintf("%s-f%d-r%02d", sid, k/10+1, k%10+1) }
	floorID := func(f int) string { return fmt.Sprintf("%s-f%d", sid, f+1) }

	caps := make([]int64, rooms)
	floorCap := make([]int64, floors)
	var siteCap int64
	for k := range caps {
		caps[k] = 4 + r.Int64N(57)
		floorCap[k/10] += caps[k]
		siteCap += caps[k]
	}
	s.Spaces = append(s.Spaces, occupancy.SpaceConfig{ID: sid, Name: fmt.Sprintf("Site %d", i+1), Capacity: siteCap})
	for f := 0; f < floors; f++ {
		sp := occupancy.SpaceConfig{ID: floorID(f), Name: fmt.Sprintf("Site %d floor %d", i+1, f+1), Parent: sid}
		if r.IntN(4) != 0 { // most floors have a capacity, some do not
			sp.Capacity = floorCap[f]
		}
		s.Spaces = append(s.Spaces, sp)
	}
	for k := 0; k < rooms; k++ {
		s.Spaces = append(s.Spaces, occupancy.SpaceConfig{
			ID: roomID(k), Name: fmt.Sprintf("Site %d room %d.%02d", i+1, k/10+1, k%10+1),
			Parent: floorID(k / 10), Capacity: caps[k],
		})
	}
	add := func(from, to string, kind string) {
		n := len(s.DPUs) + 1
		door := fmt.Sprintf("%s-w%02d", sid, n)
		s.Doorways = append(s.Doorways, occupancy.DoorwayConfig{ID: door, Name: fmt.Sprintf("Site %d %s %d", i+1, kind, n)})
		d := occupancy.DPUConfig{ID: fmt.Sprintf("%s-d%02d", sid, n), Doorway: door, PlusSpace: to, MinusSpace: from}
		if r.IntN(10) < 3 {
			d.PlusSpace, d.MinusSpace = d.MinusSpace, d.PlusSpace
		}
		s.DPUs = append(s.DPUs, d)
	}
	add("", roomID(0), "entrance")
	for k := 1; k < rooms; k++ {
		if k%10 == 0 {
			add(roomID(k-10), roomID(k), "stairs")
		} else {
			add(roomID(k-1), roomID(k), "door")
		}
	}
	for len(s.DPUs) < m {
		if rooms < 2 || r.IntN(4) == 0 {
			add("", roomID(r.IntN(rooms)), "entrance")
			continue
		}
		a := r.IntN(rooms)
		b := r.IntN(rooms - 1)
		if b >= a {
			b++
		}
		add(roomID(a), roomID(b), "door")
	}
	return s
}

// ShardSites returns the 0-based site indexes of shard k of n (1-based k): a
// contiguous block, so every shard has sites/n sites (±1).
func ShardSites(sites, k, n int) []int {
	if n <= 0 {
		k, n = 1, 1
	}
	var out []int
	for i := 0; i < sites; i++ {
		if i*n/sites == k-1 {
			out = append(out, i)
		}
	}
	return out
}

// ProbeSite is the quiet site used by the latency probe.
func ProbeSite() Site {
	return Site{
		ID: probeSite,
		Spaces: []occupancy.SpaceConfig{
			{ID: probeSite, Name: "Latency probe"},
			{ID: probeRoom, Name: "Latency probe room", Parent: probeSite, Capacity: 10},
		},
		Doorways: []occupancy.DoorwayConfig{{ID: "probe-w1", Name: "Latency probe door"}},
		DPUs:     []occupancy.DPUConfig{{ID: probeDPU, Doorway: "probe-w1", PlusSpace: probeRoom}},
	}
}

func (o TopoOptions) check() error {
	if o.Sites < 1 {
		return fmt.Errorf("--sites must be at least 1, got %d", o.Sites)
	}
	if o.DPUsPerSite < 1 {
		return fmt.Errorf("--dpus-per-site must be at least 1, got %d", o.DPUsPerSite)
	}
	if o.Shards < 0 || (o.Shards > 0 && (o.Shard < 1 || o.Shard > o.Shards)) {
		return fmt.Errorf("--shard must be K/N with 1 <= K <= N, got %d/%d", o.Shard, o.Shards)
	}
	if o.Shards > o.Sites {
		return fmt.Errorf("--shard %d/%d: more shards than sites (%d)", o.Shard, o.Shards, o.Sites)
	}
	return nil
}

// SelectedSites returns the selected sites (all, or those of the shard), plus the probe.
func (o TopoOptions) SelectedSites() []Site {
	idx := ShardSites(o.Sites, o.Shard, o.Shards)
	out := make([]Site, 0, len(idx)+1)
	for _, i := range idx {
		site := GenerateSite(o.Seed, i, o.Sites, o.DPUsPerSite)
		if !o.Kinds.IsZero() {
			for j := range site.DPUs {
				setKind(&site.DPUs[j], o.Kinds, o.Seed)
			}
		}
		out = append(out, site)
	}
	if o.Probe {
		out = append(out, ProbeSite())
	}
	return out
}

// setKind gives DPU d the kind spec draws for it, and one DPU in two of a report
// kind a map of its own (kinds.go).
func setKind(d *occupancy.DPUConfig, spec KindSpec, seed uint64) {
	k := spec.Kind(seed, d.ID)
	if k == occupancy.ReportEvents {
		return
	}
	d.Kind = k.String()
	if draw(seed+1, d.ID) >= dpuMapShare {
		return
	}
	m := intervalDPUMap
	if k == occupancy.ReportCumulative {
		m = cumulDPUMap
	}
	d.Map = &m
}

// EventsTopics is the mqtt.events_topic of the generated config. Beside the events
// filter(s) there is one entry per report kind (dpu/+/interval, dpu/+/cumulative
// with a map of its own), on which DPUs report that `dpusim run --kinds` gives a
// kind the topology does not; shard configs have one filter per site and none.
func (o TopoOptions) EventsTopics(sites []Site) config.EventsTopics {
	switch {
	case o.Shards > 0:
		t := make([]string, 0, len(sites))
		for _, s := range sites {
			t = append(t, s.ID+"/dpu/+/events")
		}
		return config.Topics(t...)
	case o.SiteTopics:
		return kindEntries("+/dpu/+/events")
	}
	return kindEntries("dpu/+/events")
}

// kindEntries are the events filter and the entries of the report kinds beside it.
func kindEntries(events string) config.EventsTopics {
	m := cumulEntryMap
	return config.EventsTopics{
		{Filter: events},
		{Filter: kindTopic(events, occupancy.ReportInterval), Kind: "interval"},
		{Filter: kindTopic(events, occupancy.ReportCumulative), Kind: "cumulative", Map: &m},
	}
}

// yamlMap renders a map as a flow mapping.
func yamlMap(m *occupancy.Mapping) string {
	var parts []string
	for _, f := range []struct{ k, v string }{
		{"items", m.Items}, {"dpu", m.DPU}, {"ts", m.TS}, {"direction", m.Direction}, {"id", m.ID},
		{"start", m.Start}, {"end", m.End}, {"in", m.In}, {"out", m.Out}, {"in_total", m.InTotal},
		{"out_total", m.OutTotal}, {"ts_format", m.TSFormat}, {"ts_zone", m.TSZone}, {"time_zone", m.TimeZone},
	} {
		if f.v != "" {
			parts = append(parts, f.k+": "+yamlString(f.v))
		}
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// WriteConfig writes a complete occupancyd config (DESIGN 7) for the options, and
// the topology file o.TopologyFile if set.
func WriteConfig(w io.Writer, o TopoOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	sites := o.SelectedSites()
	bw := bufio.NewWriterSize(w, 1<<16)
	q := yamlString
	p := func(format string, a ...any) { fmt.Fprintf(bw, format, a...) }
	p("# occupancyd config for a synthetic campus, written by:\n")
	p("#   dpusim topology --sites %d --dpus-per-site %d --seed %d", o.Sites, o.DPUsPerSite, o.Seed)
	if !o.Kinds.IsZero() {
		p(" --kinds %s", o.Kinds)
	}
	if o.Shards > 0 {
		p(" --shard %d/%d", o.Shard, o.Shards)
	} else if o.SiteTopics {
		p(" --site-topics")
	}
	p("\n")
	var nDPU, nSpace int
	for _, s := range sites {
		nDPU += len(s.DPUs)
		nSpace += len(s.Spaces)
	}
	p("# %d sites, %d spaces, %d DPUs\n", len(sites), nSpace, nDPU)
	p("gateway: {id: %s}\n", q(o.GatewayID))
	p("mqtt:\n")
	p("  broker: %s\n", q(o.Broker))
	p("  embedded: {listen: %s}\n", q(o.EmbeddedListen))
	topics := o.EventsTopics(sites)
	if len(topics) == 1 {
		p("  events_topic: %s\n", q(topics[0].Filter))
	} else {
		p("  events_topic:\n")
		for _, t := range topics {
			if t.Kind == "" {
				p("    - %s\n", q(t.Filter))
				continue
			}
			p("    - {filter: %s, kind: %s", q(t.Filter), t.Kind)
			if t.Map != nil {
				p(", map: %s", yamlMap(t.Map))
			}
			p("}\n")
		}
	}
	p("  max_payload: 262144\n")
	p("  output_prefix: occupancy\n")
	p("  homeassistant: {enabled: %t, discovery_prefix: homeassistant}\n", o.HomeAssistant)
	p("storage: {dir: %s, retention: 2160h, max_parked: 1000000}\n", q(o.StorageDir))
	p("engine: {settle_after: %s, tick: %s, late_events: apply, clamp_negative: true, max_future_skew: 1m}\n",
		shortDuration(o.SettleAfter), shortDuration(o.Tick))
	if o.HTTPToken != "" {
		p("http: {listen: %s, token: %s}\n", q(o.HTTPListen), q(o.HTTPToken))
	} else {
		p("http: {listen: %s}\n", q(o.HTTPListen))
	}
	p("log: {level: %s, format: console}\n", q(o.LogLevel))
	if o.TopologyFile != "" {
		p("topology: {file: %s}\n", q(o.TopologyFile))
		if err := writeTopologyFile(o.TopologyFile, sites); err != nil {
			return err
		}
		return bw.Flush()
	}
	p("topology:\n  spaces:\n")
	for _, s := range sites {
		for _, sp := range s.Spaces {
			p("    - {id: %s, name: %s", q(sp.ID), q(sp.Name))
			if sp.Parent != "" {
				p(", parent: %s", q(sp.Parent))
			}
			if sp.Capacity > 0 {
				p(", capacity: %d", sp.Capacity)
			}
			p("}\n")
		}
	}
	p("  doorways:\n")
	for _, s := range sites {
		for _, d := range s.Doorways {
			p("    - {id: %s, name: %s}\n", q(d.ID), q(d.Name))
		}
	}
	p("  dpus:\n")
	for _, s := range sites {
		for _, d := range s.DPUs {
			// An empty side (outside) is left out: it is the default.
			p("    - {id: %s, doorway: %s", q(d.ID), q(d.Doorway))
			if d.PlusSpace != "" {
				p(", plus_space: %s", q(d.PlusSpace))
			}
			if d.MinusSpace != "" {
				p(", minus_space: %s", q(d.MinusSpace))
			}
			if d.Kind != "" {
				p(", kind: %s", d.Kind)
			}
			if d.Map != nil {
				p(", map: %s", yamlMap(d.Map))
			}
			p("}\n")
		}
	}
	return bw.Flush()
}

// writeTopologyFile writes the sites' topology to path as JSON (occupancyd's
// topology.file), one space, doorway or DPU a line.
func writeTopologyFile(path string, sites []Site) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("topology file: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<16)
	sep := ""
	put := func(v any) {
		b, _ := json.Marshal(v) // plain structs of strings and integers
		bw.WriteString(sep)
		bw.Write(b)
		sep = ",\n  "
	}
	bw.WriteString("{\"spaces\": [\n  ")
	for _, s := range sites {
		for _, v := range s.Spaces {
			put(v)
		}
	}
	bw.WriteString("\n],\n\"doorways\": [\n  ")
	sep = ""
	for _, s := range sites {
		for _, v := range s.Doorways {
			put(v)
		}
	}
	bw.WriteString("\n],\n\"dpus\": [\n  ")
	sep = ""
	for _, s := range sites {
		for _, v := range s.DPUs {
			put(v)
		}
	}
	bw.WriteString("\n]}\n")
	err = bw.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("topology file: %w", err)
	}
	return nil
}

// plainSafe matches strings that YAML reads back as the same string when written
// plain (unquoted) in a flow mapping: a letter first, then letters, digits, spaces,
// '.', '_' and '-', no trailing space. Plain scalars parse about a third faster,
// which counts at 100,000 DPUs.
var plainSafe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_. -]*[A-Za-z0-9_.-]$|^[A-Za-z]$`)

// yamlString renders s plain when that is safe, else double-quoted.
func yamlString(s string) string {
	if plainSafe.MatchString(s) && !yamlKeyword[strings.ToLower(s)] {
		return s
	}
	return strconv.Quote(s)
}

// yamlKeyword are plain scalars YAML 1.1/1.2 would not read as strings.
var yamlKeyword = map[string]bool{"true": true, "false": true, "yes": true, "no": true, "on": true,
	"off": true, "y": true, "n": true, "null": true, "nan": true, "inf": true}

// shortDuration renders 5m0s as 5m and 1h0m0s as 1h (both parse with time.ParseDuration).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// parseShard parses "K/N".
func parseShard(s string) (k, n int, err error) {
	a, b, ok := strings.Cut(s, "/")
	if ok {
		k, err = strconv.Atoi(a)
		if err == nil {
			n, err = strconv.Atoi(b)
		}
	}
	if !ok || err != nil || n < 1 || k < 1 || k > n {
		return 0, 0, fmt.Errorf("--shard wants K/N with 1 <= K <= N, got %q", s)
	}
	return k, n, nil
}
