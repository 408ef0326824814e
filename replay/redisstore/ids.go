package redisstore

import (
	"strconv"
	"time"

	"github.com/ssegate/caddy-sse/replay"
)

// streamID is a Redis stream entry id, <ms>-<seq>.
type streamID struct {
	ms, seq uint64
}

func (a streamID) less(b streamID) bool {
	return a.ms < b.ms || (a.ms == b.ms && a.seq < b.seq)
}

func (a streamID) String() string {
	return strconv.FormatUint(a.ms, 10) + "-" + strconv.FormatUint(a.seq, 10)
}

// time is when Redis made the id: the entry's acceptance time.
func (a streamID) time() time.Time { return time.UnixMilli(int64(a.ms)) }

// parseID accepts exactly the ids Redis issues (see replay.SplitStreamID).
func parseID(s string) (streamID, bool) {
	ms, seq, ok := replay.SplitStreamID(s)
	return streamID{ms, seq}, ok
}

// mustID parses an id Redis gave us; a malformed one (never expected) reads
// as 0-0.
func mustID(s string) streamID {
	id, _ := parseID(s)
	return id
}

func maxID(a, b streamID) streamID {
	if a.less(b) {
		return b
	}
	return a
}
