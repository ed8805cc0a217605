package occupancy

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
)

// memStore is an in-memory Store for tests and benchmarks, with the buffer's write
// side (Append with dedup, PutReset, PutVersion, Commit) so tests can drive an
// engine the way the gateway does. It refuses to rewrite a settled row.
type memStore struct {
	versions []Version
	cp       Checkpoint
	hasCP    bool
	events   []Event // sorted by key
	keys     map[string]bool
	parked   map[string]Event
	late     map[string]Event // stored late, correction not committed (Store.Late)
	resets   map[string]Reset // by space+ts
	rows     map[string][]Row // per space, ordered by (TS, Seq)
	noEvents bool             // benchmarks: do not keep events

	reports   []Report // sorted by (TS, DPU, Kind), parked ones included
	repParked map[repKey]bool
	lateReps  map[repKey]Report // stored late, correction not committed (Store.LateReports)
}

func newMemStore() *memStore {
	return &memStore{keys: map[string]bool{}, parked: map[string]Event{}, late: map[string]Event{},
		resets: map[string]Reset{}, rows: map[string][]Row{}, repParked: map[repKey]bool{}, lateReps: map[repKey]Report{}}
}

// AppendReports stores reports not seen before whose range overlaps no stored
// interval of their DPU, parked[i] marking an unmappable one and one marked Late
// (not parked) kept as late until a commit lists it in CorrectedReports; it returns
// which were stored.
func (m *memStore) AppendReports(reps []Report, parked []bool) []bool {
	fresh := make([]bool, len(reps))
	for i, r := range reps {
		if m.overlapsStored(r) {
			continue
		}
		j := sort.Search(len(m.reports), func(j int) bool { return !reportLess(m.reports[j], r) })
		m.reports = append(m.reports, Report{})
		copy(m.reports[j+1:], m.reports[j:])
		m.reports[j] = r
		fresh[i] = true
		if parked != nil && parked[i] {
			m.repParked[keyOf(r)] = true
		} else if r.Late {
			m.lateReps[keyOf(r)] = r
		}
	}
	return fresh
}

// overlapsStored reports whether r is stored already or may not be stored: a
// cumulative report with its DPU and ts, an interval overlapping one of its DPU.
func (m *memStore) overlapsStored(r Report) bool {
	for _, o := range m.reports {
		if o.DPU == r.DPU && o.Kind == r.Kind && (o.TS == r.TS || (r.Kind == ReportInterval && o.Overlaps(r))) {
			return true
		}
	}
	return false
}

func reportLess(a, b Report) bool {
	if a.TS != b.TS {
		return a.TS < b.TS
	}
	if a.DPU != b.DPU {
		return a.DPU < b.DPU
	}
	return a.Kind < b.Kind
}

func (m *memStore) Reports(from, to int64, fn func(Report) error) error {
	i := sort.Search(len(m.reports), func(i int) bool { return m.reports[i].TS >= from })
	for ; i < len(m.reports) && m.reports[i].TS < to; i++ {
		if err := fn(m.reports[i]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) ParkedReports(fn func(Report) error) error {
	for _, r := range m.reports {
		if m.repParked[keyOf(r)] {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *memStore) LateReports(fn func(Report) error) error {
	for _, r := range m.reports {
		if _, ok := m.lateReps[keyOf(r)]; ok {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *memStore) CumulativeBefore(dpu string, t int64) (Report, bool, error) {
	for i := len(m.reports) - 1; i >= 0; i-- {
		if r := m.reports[i]; r.TS < t && r.DPU == dpu && r.Kind == ReportCumulative {
			return r, true, nil
		}
	}
	return Report{}, false, nil
}

func (m *memStore) PutVersion(v Version) { m.versions = append(m.versions, v) }

func (m *memStore) PutReset(r Reset) { m.resets[fmt.Sprintf("%s/%020d", r.Space, r.TS)] = r }

// Append stores events not seen before; parked[i] marks an unmappable one, and an
// event marked Late (not parked) is kept as late until a commit lists it in
// Corrected. It returns which were new.
func (m *memStore) Append(evs []Event, parked []bool) []bool {
	fresh := make([]bool, len(evs))
	for i, ev := range evs {
		k := string(ev.Key())
		if m.keys[k] {
			continue
		}
		m.keys[k] = true
		fresh[i] = true
		if parked != nil && parked[i] {
			m.parked[k] = ev
			continue
		}
		if ev.Late {
			m.late[k] = ev
		}
		if m.noEvents {
			continue
		}
		m.insertEvent(ev)
	}
	return fresh
}

func (m *memStore) insertEvent(ev Event) {
	k := ev.Key()
	i := sort.Search(len(m.events), func(i int) bool { return bytes.Compare(m.events[i].Key(), k) >= 0 })
	m.events = append(m.events, Event{})
	copy(m.events[i+1:], m.events[i:])
	m.events[i] = ev
}

func (m *memStore) Commit(st Settlement) error {
	if st.RewriteFrom > 0 {
		for sp, rs := range m.rows {
			i := sort.Search(len(rs), func(i int) bool { return rs[i].TS >= st.RewriteFrom })
			m.rows[sp] = rs[:i:i]
		}
	}
	for _, r := range st.Rows {
		rs := m.rows[r.Space]
		if n := len(rs); n > 0 {
			last := rs[n-1]
			if r.TS < last.TS || (r.TS == last.TS && r.Seq <= last.Seq) {
				return fmt.Errorf("memstore: row %s@%d/%d rewrites or precedes settled row @%d/%d", r.Space, r.TS, r.Seq, last.TS, last.Seq)
			}
		}
		m.rows[r.Space] = append(rs, r)
	}
	for _, ev := range st.Unparked {
		k := string(ev.Key())
		if _, ok := m.parked[k]; ok {
			delete(m.parked, k)
			if !m.noEvents {
				m.insertEvent(ev)
			}
		}
	}
	for _, ev := range st.Corrected {
		delete(m.late, string(ev.Key()))
	}
	for _, r := range st.UnparkedReports {
		delete(m.repParked, keyOf(r))
	}
	for _, r := range st.CorrectedReports {
		delete(m.lateReps, keyOf(r))
	}
	m.cp, m.hasCP = st.Checkpoint, true
	return nil
}

func (m *memStore) Versions() ([]Version, error) { return append([]Version(nil), m.versions...), nil }

func (m *memStore) Checkpoint() (Checkpoint, bool, error) { return m.cp, m.hasCP, nil }

func (m *memStore) Events(from, to int64, fn func(Event) error) error {
	i := sort.Search(len(m.events), func(i int) bool { return m.events[i].TS >= from })
	for ; i < len(m.events) && m.events[i].TS < to; i++ {
		if err := fn(m.events[i]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) Resets(from int64, fn func(Reset) error) error {
	var rs []Reset
	for _, r := range m.resets {
		if r.TS >= from {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].TS != rs[j].TS {
			return rs[i].TS < rs[j].TS
		}
		return rs[i].Space < rs[j].Space
	})
	for _, r := range rs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) Parked(fn func(Event) error) error { return eachByKey(m.parked, fn) }

func (m *memStore) Late(fn func(Event) error) error { return eachByKey(m.late, fn) }

// eachByKey calls fn for the events of set in key order.
func eachByKey(set map[string]Event, fn func(Event) error) error {
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(set[k]); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) RowAt(space string, t int64) (Row, bool, error) {
	rs := m.rows[space]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].TS > t })
	if i == 0 {
		return Row{}, false, nil
	}
	return rs[i-1], true, nil
}

func (m *memStore) Rows(space string, from, to int64, fn func(Row) error) error {
	rs := m.rows[space]
	i := sort.Search(len(rs), func(i int) bool { return rs[i].TS >= from })
	for ; i < len(rs) && rs[i].TS < to; i++ {
		if err := fn(rs[i]); err != nil {
			return err
		}
	}
	return nil
}

var _ Store = (*memStore)(nil)

var errTest = errors.New("test")
