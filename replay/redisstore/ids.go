package redisstore

import (
	"strconv"
	"strings"
	"time"
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

// parseID accepts exactly the ids Redis issues: two decimal numbers without
// sign, leading zeros or spaces, joined by a dash. Anything else (including
// the shorthand "<ms>" Redis itself would accept) is not an id of ours.
func parseID(s string) (streamID, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, false
	}
	ms, ok1 := parseDecimal(a)
	seq, ok2 := parseDecimal(b)
	return streamID{ms, seq}, ok1 && ok2
}

func parseDecimal(s string) (uint64, bool) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
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
