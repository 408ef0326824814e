package source

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ssegate/caddy-sse/topic"
	"github.com/ssegate/caddy-sse/wire"
)

// Mapping turns an NDJSON line into a record: which topic it goes to, its
// upstream id, its event type and its data. Paths are dot paths into a JSON
// object ("meta.channel"); a segment that is a non-negative integer also
// indexes an array ("items.0.id").
type Mapping struct {
	// Topic receives every line, unless TopicField is set.
	Topic string
	// TopicField routes each line by the value at this path.
	TopicField string
	// IDField is the upstream's own id: resume cursor and dedup key.
	IDField string
	// EventField gives the event type; without it, "message".
	EventField string
	// DataField gives the event data; without it, the whole line.
	DataField string
	// CloseField and CloseValue: a line whose field has this value (as
	// text) ends its topic after being appended.
	CloseField, CloseValue string
	// MaxEvent bounds the data of one event in bytes; 0 means no bound.
	MaxEvent int
	// MaxTopicLength bounds routed topic names in bytes; 0 means no bound.
	MaxTopicLength int
}

// Record is a line mapped to an event.
type Record struct {
	Topic string
	// ID is the upstream id ("" without IDField).
	ID    string
	Event string
	Data  []byte
	// Close asks for the topic to end once this record is appended.
	Close bool
}

// Skip is why a line was skipped.
type Skip struct {
	// Kind is one of the SkipReasons: what a metric may be labelled with.
	Kind string
	// Reason says what exactly was wrong, for the log.
	Reason string
}

func (s *Skip) Error() string { return s.Reason }

func skipf(kind, format string, args ...any) *Skip {
	return &Skip{Kind: kind, Reason: fmt.Sprintf(format, args...)}
}

// Skip reasons without details.
var (
	skipUTF8 = &Skip{Kind: SkipMalformed, Reason: "not valid UTF-8"}
	skipJSON = &Skip{Kind: SkipMalformed, Reason: "not valid JSON"}
)

// mapsJSON reports whether lines must be parsed as JSON.
func (m *Mapping) mapsJSON() bool {
	return m.TopicField != "" || m.IDField != "" || m.EventField != "" || m.DataField != "" || m.CloseField != ""
}

// Map maps one line. The record owns its data (the line is not retained).
// A line that cannot be mapped yields a *Skip.
func (m *Mapping) Map(line []byte) (Record, error) {
	if !utf8.Valid(line) {
		return Record{}, skipUTF8
	}
	rec := Record{Topic: m.Topic, Event: "message"}
	if !m.mapsJSON() {
		rec.Data = wire.NormalizeLineBreaks(bytes.Clone(line))
		return rec, m.checkSize(rec.Data)
	}
	if !json.Valid(line) {
		return Record{}, skipJSON
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil || obj == nil {
		return Record{}, &Skip{Kind: SkipMalformed, Reason: "not a JSON object"}
	}
	var err error
	if m.TopicField != "" {
		if rec.Topic, err = field(obj, m.TopicField); err != nil {
			return Record{}, err
		}
		if err := checkTopic(rec.Topic, m.MaxTopicLength); err != nil {
			return Record{}, err
		}
	}
	if m.IDField != "" {
		if rec.ID, err = field(obj, m.IDField); err != nil {
			return Record{}, err
		}
		if len(rec.ID) > maxUpstreamID {
			return Record{}, skipf(SkipMalformed, "id of %d bytes is longer than %d", len(rec.ID), maxUpstreamID)
		}
	}
	if m.EventField != "" {
		var ev string
		if ev, err = field(obj, m.EventField); err != nil {
			return Record{}, err
		}
		rec.Event = wire.SanitizeName(ev)
	}
	if m.DataField != "" {
		var data string
		if data, err = field(obj, m.DataField); err != nil {
			return Record{}, err
		}
		rec.Data = wire.NormalizeLineBreaks([]byte(data))
	} else {
		// JSON white space around the value is no part of it; inside,
		// a valid JSON line has no line break.
		rec.Data = bytes.Clone(bytes.Trim(line, " \t\r"))
	}
	if err := m.checkSize(rec.Data); err != nil {
		return Record{}, err
	}
	if m.CloseField != "" {
		if v, err := field(obj, m.CloseField); err == nil && v == m.CloseValue {
			rec.Close = true
		}
	}
	return rec, nil
}

func (m *Mapping) checkSize(data []byte) error {
	if m.MaxEvent > 0 && len(data) > m.MaxEvent {
		return skipf(SkipTooLarge, "event data of %d bytes exceeds event_size of %d", len(data), m.MaxEvent)
	}
	return nil
}

// maxUpstreamID bounds an upstream id: it is kept for deduplication and
// sent back as the resume cursor.
const maxUpstreamID = 1024

// field returns the text of the value at path: a string as is, any other
// JSON value as its compact JSON text. A missing or null value is a skip.
func field(obj map[string]json.RawMessage, path string) (string, error) {
	raw, ok := lookup(obj, path)
	if !ok {
		return "", skipf(SkipMissingField, "no field %s", path)
	}
	return text(raw, path)
}

func lookup(obj map[string]json.RawMessage, path string) (json.RawMessage, bool) {
	key, rest, more := strings.Cut(path, ".")
	raw, ok := obj[key]
	for ok && more {
		key, rest, more = strings.Cut(rest, ".")
		raw, ok = child(raw, key)
	}
	if !ok || string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

// child descends one segment into an object or, by index, an array.
func child(raw json.RawMessage, key string) (json.RawMessage, bool) {
	switch {
	case len(raw) > 0 && raw[0] == '{':
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return nil, false
		}
		v, ok := obj[key]
		return v, ok
	case len(raw) > 0 && raw[0] == '[':
		i, err := strconv.Atoi(key)
		if err != nil || i < 0 {
			return nil, false
		}
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) != nil || i >= len(arr) {
			return nil, false
		}
		return arr[i], true
	}
	return nil, false
}

func text(raw json.RawMessage, path string) (string, error) {
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", skipf(SkipMalformed, "field %s: %v", path, err)
		}
		return s, nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "", skipf(SkipMalformed, "field %s: %v", path, err)
	}
	return b.String(), nil
}

// checkTopic applies the handler's rules for topic names.
func checkTopic(name string, maxLen int) error {
	if err := topic.Validate(name, maxLen); err != nil {
		return &Skip{Kind: SkipBadTopic, Reason: err.Error()}
	}
	return nil
}
