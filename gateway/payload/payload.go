// Package payload renders the occupancy object of DESIGN 2 — the retained MQTT
// payload, the HTTP API's answer and the stream's event carry the same JSON — and
// the contract's time format (RFC 3339, milliseconds, UTC). It imports nothing of
// occupancyd but occupancy/, so every output package can share it.
package payload

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/occupancyd/occupancyd/occupancy"
)

// TimeLayoutMS is the contract's time format: RFC 3339 with milliseconds, in UTC.
const TimeLayoutMS = "2006-01-02T15:04:05.000Z"

// FormatMS renders Unix ms as RFC 3339 with milliseconds in UTC.
func FormatMS(ms int64) string {
	return time.UnixMilli(ms).UTC().Format(TimeLayoutMS)
}

// occupancyDoc is the occupancy payload of DESIGN 2, as a struct: what
// AppendOccupancyJSON writes without reflection (the tests compare the two).
type occupancyDoc struct {
	Space        string   `json:"space"`
	Name         string   `json:"name"`
	Occupancy    int64    `json:"occupancy"`
	Capacity     int64    `json:"capacity,omitempty"`
	Utilization  *float64 `json:"utilization,omitempty"`
	Updated      string   `json:"updated"`
	SettledUntil string   `json:"settled_until"`
}

func newOccupancyDoc(o occupancy.Occupancy) occupancyDoc {
	d := occupancyDoc{
		Space:        o.Space,
		Name:         o.Name,
		Occupancy:    o.Occupancy,
		Updated:      FormatMS(o.Updated),
		SettledUntil: FormatMS(o.SettledUntil),
	}
	if o.Capacity > 0 {
		d.Capacity = o.Capacity
		u := Utilization(o)
		d.Utilization = &u
	}
	return d
}

// OccupancyJSON renders a space's occupancy as the JSON of DESIGN 2 (the retained
// MQTT payload and the HTTP API's object).
func OccupancyJSON(o occupancy.Occupancy) ([]byte, error) {
	return AppendOccupancyJSON(make([]byte, 0, 192), o), nil
}

// AppendOccupancyJSON appends exactly what json.Marshal(newOccupancyDoc(o)) gives,
// without reflection (it runs for every retained publish).
func AppendOccupancyJSON(b []byte, o occupancy.Occupancy) []byte {
	b = append(b, `{"space":`...)
	b = appendJSONString(b, o.Space)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, o.Name)
	b = append(b, `,"occupancy":`...)
	b = strconv.AppendInt(b, o.Occupancy, 10)
	if o.Capacity > 0 {
		b = append(b, `,"capacity":`...)
		b = strconv.AppendInt(b, o.Capacity, 10)
		b = append(b, `,"utilization":`...)
		b = strconv.AppendFloat(b, Utilization(o), 'f', -1, 64)
	}
	b = append(b, `,"updated":"`...)
	b = time.UnixMilli(o.Updated).UTC().AppendFormat(b, TimeLayoutMS)
	b = append(b, `","settled_until":"`...)
	b = time.UnixMilli(o.SettledUntil).UTC().AppendFormat(b, TimeLayoutMS)
	return append(b, `"}`...)
}

// AppendOccupancyList appends a JSON array of occupancy objects.
func AppendOccupancyList(b []byte, os []occupancy.Occupancy) []byte {
	b = append(b, '[')
	for i, o := range os {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendOccupancyJSON(b, o)
	}
	return append(b, ']')
}

// Utilization is occupancy / capacity rounded to three decimals (capacity > 0).
func Utilization(o occupancy.Occupancy) float64 {
	return math.Round(float64(o.Occupancy)/float64(o.Capacity)*1000) / 1000
}

// appendJSONString appends s as a JSON string, escaped as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
