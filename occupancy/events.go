package occupancy

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxIDLen bounds an event id (bytes). Longer ids are rejected as bad_id.
const MaxIDLen = 128

// ValidID reports whether id matches [A-Za-z0-9_-]{1,64} (space, doorway and DPU ids).
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Key is the identity of an event and its position in the true timeline:
//
//	8 bytes big-endian TS with the sign bit flipped (so byte order is time order),
//	the DPU id, a 0x00 separator, then 'i'+ID when ID != "" or 'd'+direction byte
//	(0x01 for +1, 0xFF for -1).
//
// Byte order of keys is the timeline order (TS, DPU, ID|direction). At the same
// millisecond and DPU, events without an id come before events with one, +1 before -1.
func (e Event) Key() []byte {
	return e.AppendKey(make([]byte, 0, 8+len(e.DPU)+2+len(e.ID)))
}

// AppendKey appends e.Key() to dst (the store prefixes keys without a second copy).
func (e Event) AppendKey(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.TS)^(1<<63))
	dst = append(dst, e.DPU...)
	dst = append(dst, 0)
	if e.ID != "" {
		dst = append(dst, 'i')
		return append(dst, e.ID...)
	}
	return append(dst, 'd', byte(e.Direction))
}

// ParseKey is the inverse of Key. An event keyed by its id has Direction 0 (the
// direction is not part of its identity); the stored value carries it.
func ParseKey(k []byte) (Event, error) {
	if len(k) < 8+1+1+1 {
		return Event{}, fmt.Errorf("parse event key: too short (%d bytes)", len(k))
	}
	ts := int64(binary.BigEndian.Uint64(k[:8]) ^ (1 << 63))
	rest := k[8:]
	sep := bytes.IndexByte(rest, 0)
	if sep < 1 {
		return Event{}, errors.New("parse event key: missing dpu or separator")
	}
	ev := Event{TS: ts, DPU: string(rest[:sep])}
	tail := rest[sep+1:]
	if len(tail) < 1 {
		return Event{}, errors.New("parse event key: missing id or direction")
	}
	switch tail[0] {
	case 'i':
		if len(tail) < 2 {
			return Event{}, errors.New("parse event key: empty id")
		}
		ev.ID = string(tail[1:])
	case 'd':
		if len(tail) != 2 {
			return Event{}, errors.New("parse event key: bad direction field")
		}
		ev.Direction = int8(tail[1])
		if ev.Direction != 1 && ev.Direction != -1 {
			return Event{}, fmt.Errorf("parse event key: bad direction %d", ev.Direction)
		}
	default:
		return Event{}, fmt.Errorf("parse event key: unknown tail tag %q", tail[0])
	}
	return ev, nil
}

// rawEvent is the wire form of one event object; fields are decoded by hand so that
// every bad field gets its own reason.
type rawEvent struct {
	ID        json.RawMessage `json:"id"`
	TS        json.RawMessage `json:"ts"`
	Direction json.RawMessage `json:"direction"`
}

// DecodePayload decodes one MQTT payload of DPU dpu: one event object or a JSON array
// of them. Good events of a batch survive bad neighbours; each bad element yields a
// Rejection with its index (-1 for the whole message).
func DecodePayload(dpu string, payload []byte, lim Limits) ([]Event, []Rejection) {
	if lim.MaxPayload > 0 && len(payload) > lim.MaxPayload {
		return nil, []Rejection{{Reason: ReasonTooLarge, Index: -1,
			Detail: fmt.Sprintf("payload of %d bytes exceeds max_payload %d", len(payload), lim.MaxPayload)}}
	}
	if !ValidID(dpu) {
		return nil, []Rejection{{Reason: ReasonBadTopic, Index: -1,
			Detail: fmt.Sprintf("invalid dpu id %q: want [A-Za-z0-9_-]{1,64}", truncate(dpu, 80))}}
	}
	body := bytes.TrimSpace(payload)
	if len(body) == 0 {
		return nil, []Rejection{{Reason: ReasonBadJSON, Index: -1, Detail: "empty payload"}}
	}
	if body[0] != '[' {
		ev, rej, ok := decodeOne(dpu, body, lim)
		if !ok {
			rej.Index = -1
			return nil, []Rejection{rej}
		}
		return []Event{ev}, nil
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(body, &elems); err != nil {
		return nil, []Rejection{{Reason: ReasonBadJSON, Index: -1, Detail: "invalid json array: " + err.Error()}}
	}
	evs := make([]Event, 0, len(elems))
	var rejs []Rejection
	for i, el := range elems {
		ev, rej, ok := decodeOne(dpu, el, lim)
		if !ok {
			rej.Index = i
			rejs = append(rejs, rej)
			continue
		}
		evs = append(evs, ev)
	}
	return evs, rejs
}

func decodeOne(dpu string, b []byte, lim Limits) (Event, Rejection, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return Event{}, Rejection{Reason: ReasonBadJSON, Detail: "event must be a json object"}, false
	}
	var raw rawEvent
	if err := json.Unmarshal(b, &raw); err != nil {
		return Event{}, Rejection{Reason: ReasonBadJSON, Detail: "invalid json object: " + err.Error()}, false
	}
	ev := Event{DPU: dpu, Received: lim.Now}
	id, err := decodeID(raw.ID)
	if err != nil {
		return Event{}, Rejection{Reason: ReasonBadID, Detail: err.Error()}, false
	}
	ev.ID = id
	dir, err := decodeDirection(raw.Direction)
	if err != nil {
		return Event{}, Rejection{Reason: ReasonBadDirection, Detail: err.Error()}, false
	}
	ev.Direction = dir
	ts, err := decodeTS(raw.TS)
	if err != nil {
		return Event{}, Rejection{Reason: ReasonBadTS, Detail: err.Error()}, false
	}
	ev.TS = ts
	if rej, ok := receiveChecks(ts, lim); !ok {
		return Event{}, rej, false
	}
	return ev, Rejection{}, true
}

// receiveChecks applies the receive-time checks of lim to the instant ts an event or
// report counts at: future_ts beyond now + max_future_skew, too_old before the
// retention bound.
func receiveChecks(ts int64, lim Limits) (Rejection, bool) {
	if lim.Now != 0 && ts > lim.Now+lim.MaxFutureSkew {
		return Rejection{Reason: ReasonFutureTS,
			Detail: fmt.Sprintf("ts %s is %s ahead of receive time (max_future_skew %s)", fmtMS(ts),
				time.Duration(ts-lim.Now)*time.Millisecond, time.Duration(lim.MaxFutureSkew)*time.Millisecond)}, false
	}
	if lim.Oldest != 0 && ts < lim.Oldest {
		return Rejection{Reason: ReasonTooOld,
			Detail: fmt.Sprintf("ts %s is older than the retention bound %s", fmtMS(ts), fmtMS(lim.Oldest))}, false
	}
	return Rejection{}, true
}

// decodeID reads an event id (DESIGN 2): a JSON string, or an integer taken as its
// decimal string, of at most MaxIDLen bytes of valid UTF-8; null or absent is none.
// The string is decoded from its raw bytes: encoding/json would turn invalid UTF-8
// and lone surrogate escapes into U+FFFD, so that different ids collided.
func decodeID(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var id string
	switch c := raw[0]; {
	case c == '"':
		s, err := jsonStringBytes(raw)
		if err != nil {
			return "", fmt.Errorf("id: %w", err)
		}
		id = s
	case c == '-' || c >= '0' && c <= '9':
		for i, c := range []byte(raw) {
			if !(c >= '0' && c <= '9' || c == '-' && i == 0) {
				return "", fmt.Errorf("id must be a string or an integer, got %s", truncate(string(raw), 40))
			}
		}
		id = string(raw)
	default:
		return "", fmt.Errorf("id must be a string or an integer, got %s", truncate(string(raw), 40))
	}
	if len(id) > MaxIDLen {
		return "", fmt.Errorf("id of %d bytes: at most %d", len(id), MaxIDLen)
	}
	return id, nil
}

// jsonStringBytes decodes a JSON string literal (already checked to be JSON) to its
// bytes, refusing invalid UTF-8 and escapes of lone surrogates.
func jsonStringBytes(raw []byte) (string, error) {
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return "", errors.New("not a json string")
	}
	body := raw[1 : len(raw)-1]
	if !utf8.Valid(body) {
		return "", fmt.Errorf("not valid UTF-8: %q", truncate(string(body), 40))
	}
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body), nil // the common case: no escapes
	}
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(body) {
			return "", errors.New("bad escape")
		}
		i++
		switch body[i] {
		case '"', '\\', '/':
			out = append(out, body[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, n := hex4(body[i+1:])
			if n < 0 {
				return "", errors.New("bad \\u escape")
			}
			i += n
			if utf16.IsSurrogate(r) {
				lo, m := rune(-1), -1
				if i+2 < len(body) && body[i+1] == '\\' && body[i+2] == 'u' {
					lo, m = hex4(body[i+3:])
				}
				if r = utf16.DecodeRune(r, lo); m < 0 || r == utf8.RuneError {
					return "", errors.New("an escaped lone surrogate is not valid UTF-8")
				}
				i += 2 + m
			}
			out = utf8.AppendRune(out, r)
		default:
			return "", errors.New("bad escape")
		}
	}
	return string(out), nil
}

// hex4 reads 4 hex digits: the rune and how many bytes (4), or -1.
func hex4(b []byte) (rune, int) {
	if len(b) < 4 {
		return 0, -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, -1
		}
	}
	return r, 4
}

func decodeDirection(raw json.RawMessage) (int8, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("direction is required")
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("direction: %w", err)
		}
		s = strings.TrimSpace(s)
	}
	switch s {
	case "1", "+1":
		return 1, nil
	case "-1":
		return -1, nil
	}
	return 0, fmt.Errorf("direction must be 1 or -1, got %s", truncate(string(raw), 40))
}

func decodeTS(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("ts is required")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, fmt.Errorf("ts: %w", err)
		}
		return parseRFC3339(s)
	}
	ms, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("ts must be RFC 3339 or integer Unix milliseconds, got %s", truncate(string(raw), 40))
	}
	// Keep ts within what time.Time and the key encoding render sensibly.
	const lim = int64(1) << 50
	if ms > lim || ms < -lim {
		return 0, fmt.Errorf("ts %d out of range", ms)
	}
	return ms, nil
}

// parseRFC3339 reads an RFC 3339 date-time as Unix ms: 'T' and 'Z' may be lower
// case (RFC 3339 section 5.6), fractional seconds of any length, any offset of
// 00:00 to 23:59 (Go's parser also takes +24:00 and +23:60).
func parseRFC3339(s string) (int64, error) {
	bad := func() (int64, error) { return 0, fmt.Errorf("ts %q is not RFC 3339", truncate(s, 60)) }
	v := s
	if len(v) > 10 && v[10] == 't' || strings.HasSuffix(v, "z") {
		b := []byte(v)
		if len(b) > 10 && b[10] == 't' {
			b[10] = 'T'
		}
		if b[len(b)-1] == 'z' {
			b[len(b)-1] = 'Z'
		}
		v = string(b)
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return bad()
	}
	if n := len(v); n > 6 && (v[n-6] == '+' || v[n-6] == '-') && (v[n-5] > '2' || v[n-5] == '2' && v[n-4] > '3' || v[n-2] > '5') {
		return bad()
	}
	return t.UnixMilli(), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func fmtMS(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}
