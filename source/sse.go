package source

import (
	"bytes"
	"strconv"
	"time"

	"github.com/ssegate/caddy-sse/lines"
	"github.com/ssegate/caddy-sse/wire"
)

// sseEvent is one event relayed from an upstream event stream.
type sseEvent struct {
	// ID is the stream's last event ID at dispatch (what a browser would
	// send back as Last-Event-ID).
	ID string
	// OwnID is true when the event's own block set the id, so it can be
	// used to recognise the event again.
	OwnID bool
	Type  string
	Data  []byte
}

// sseParser interprets an upstream event stream line by line, following
// the WHATWG "interpret an event stream" algorithm: fields data, event, id
// and retry; comments and unknown fields ignored; a blank line dispatches
// the block, and a block without data dispatches nothing.
type sseParser struct {
	maxEvent int

	// LastEventID moves on every blank line, as in a browser.
	LastEventID string
	// Retry is the latest valid retry field, or -1.
	Retry time.Duration

	data      bytes.Buffer
	hasData   bool
	eventType string
	idBuf     string
	ownID     bool
	broken    *Skip // why the block in progress will be skipped
}

func newSSEParser(maxEvent int) *sseParser {
	return &sseParser{maxEvent: maxEvent, Retry: -1}
}

// Line processes one line. It returns an event when the line dispatched
// one, or why not when it dispatched a block that could not be kept.
func (p *sseParser) Line(l lines.Line) (ev *sseEvent, skip *Skip) {
	if l.TooLong {
		// The field cannot be known without the whole line; the block it
		// belongs to is dropped at its dispatch.
		if p.broken == nil {
			p.broken = skipLineTooLong
		}
		return nil, nil
	}
	line := l.Text
	if len(line) == 0 {
		return p.dispatch()
	}
	if line[0] == ':' {
		return nil, nil
	}
	name, value, found := bytes.Cut(line, []byte{':'})
	if found {
		value = bytes.TrimPrefix(value, []byte{' '})
	}
	switch string(name) {
	case "event":
		p.eventType = string(bytes.ToValidUTF8(value, []byte("\uFFFD")))
	case "data":
		if p.broken != nil {
			break
		}
		if p.maxEvent > 0 && p.data.Len()+len(value) > p.maxEvent {
			p.broken = &Skip{Kind: SkipTooLarge, Reason: "event data exceeds event_size"}
			p.data.Reset()
			break
		}
		p.data.Write(value)
		p.data.WriteByte('\n')
		p.hasData = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.idBuf = string(bytes.ToValidUTF8(value, []byte("\uFFFD")))
			p.ownID = true
		}
	case "retry":
		if n, ok := digits(value); ok {
			p.Retry = time.Duration(n) * time.Millisecond
		}
	}
	return nil, nil
}

func digits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil && n < int64(time.Hour/time.Millisecond)*24
}

func (p *sseParser) dispatch() (*sseEvent, *Skip) {
	p.LastEventID = p.idBuf
	defer func() {
		p.data.Reset()
		p.hasData, p.eventType, p.ownID, p.broken = false, "", false, nil
	}()
	if p.broken != nil {
		return nil, p.broken
	}
	if !p.hasData {
		return nil, nil
	}
	data := p.data.Bytes()
	data = bytes.ToValidUTF8(data[:len(data)-1], []byte("\uFFFD"))
	if len(p.LastEventID) > maxUpstreamID {
		return nil, &Skip{Kind: SkipMalformed, Reason: "id longer than 1024 bytes"}
	}
	return &sseEvent{
		ID:    p.LastEventID,
		OwnID: p.ownID,
		Type:  wire.SanitizeName(p.eventType),
		Data:  data, // a copy already
	}, nil
}
