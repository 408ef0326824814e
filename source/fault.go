package source

import (
	"errors"

	"github.com/ssegate/caddy-sse/replay"
)

// Why a line is skipped: the values of a skip's Kind, a fixed set so that a
// metric labelled by them stays bounded whatever the upstream sends. Each
// names something wrong with the line itself (or a refusal the store would
// repeat for it forever), never a store that is down: such a line waits.
const (
	// SkipTooLong: longer than max_line.
	SkipTooLong = "too_long"
	// SkipMalformed: not UTF-8, not JSON, not an object, an id over 1 KiB.
	SkipMalformed = "malformed"
	// SkipMissingField: a mapped field is missing or null.
	SkipMissingField = "missing_field"
	// SkipBadTopic: the routed topic is empty, too long or has control
	// characters.
	SkipBadTopic = "bad_topic"
	// SkipTooLarge: the data exceeds event_size, or the event exceeds the
	// topic's history bound (replay.ErrBatchTooLarge).
	SkipTooLarge = "too_large"
	// SkipTopicClosed: the routed topic has ended (topic_field only; a
	// source with a fixed topic stops instead).
	SkipTopicClosed = "topic_closed"
	// SkipTopicLimit: the line opens a new topic and the store is at its
	// topic limit (replay.ErrTooManyTopics).
	SkipTopicLimit = "topic_limit"
)

// SkipReasons lists every Kind, in a stable order.
var SkipReasons = [...]string{SkipTooLong, SkipMalformed, SkipMissingField, SkipBadTopic, SkipTooLarge, SkipTopicClosed, SkipTopicLimit}

// skipIndex is kind's place in SkipReasons. A kind outside the set (a
// skip someone forgot to classify) counts as malformed: a miscounted line
// is better than a panic in the puller, and the label set stays fixed.
func skipIndex(kind string) int {
	for i, k := range SkipReasons {
		if k == kind {
			return i
		}
	}
	return skipIndex(SkipMalformed)
}

var skipLineTooLong = &Skip{Kind: SkipTooLong, Reason: "line longer than max_line"}

// storeFault is what a failed append means for the line and the source.
type storeFault int

const (
	// faultTransient: the store cannot take the line now; the line is good
	// and must be appended later, once and in its place.
	faultTransient storeFault = iota
	// faultLine: the store refuses this line and would refuse it again.
	faultLine
	// faultTopicClosed: the line's topic has ended.
	faultTopicClosed
	// faultStoreClosed: the store is gone for good.
	faultStoreClosed
)

// classify says what an append error means, and for a refused line why.
//
// Only refusals known to be about the line are permanent: skipping a line
// loses it, whereas waiting on an error that turns out to be permanent only
// stalls the source, loudly (it logs every retry). So unavailability,
// timeouts, a lost lease, a cancelled context, an error Redis answered that
// is not ours to judge (OOM, a failed script) and anything unknown are
// transient. The topic limit counts as the line's: it can last as long as
// the topics that fill it, and waiting would hold back every other topic
// the source feeds.
func classify(err error) (storeFault, string) {
	switch {
	case errors.Is(err, replay.ErrStoreClosed):
		return faultStoreClosed, ""
	case errors.Is(err, replay.ErrTopicClosed):
		return faultTopicClosed, SkipTopicClosed
	case errors.Is(err, replay.ErrBatchTooLarge):
		return faultLine, SkipTooLarge
	case errors.Is(err, replay.ErrTooManyTopics):
		return faultLine, SkipTopicLimit
	}
	return faultTransient, ""
}
