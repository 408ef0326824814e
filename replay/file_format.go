package replay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	bolt "go.etcd.io/bbolt"
)

// fileFormat is the layout version written in meta/version. Format 2 added
// a checksum to event records; a format 1 file is upgraded when opened (see
// File.upgrade).
const fileFormat = "2"

var (
	bucketMeta   = []byte("meta")
	bucketTopics = []byte("topics")
	bucketEvents = []byte("events")
	bucketDedup  = []byte("dedup")
	keyVersion   = []byte("version")
	keyEpoch     = []byte("epoch")
	keySeq       = []byte("seq")
	keyForgotten = []byte("forgotten")
	// keyChecksummedAfter: events with a seq above it have a checksum.
	keyChecksummedAfter = []byte("checksummed-after")
	keyTopicMeta        = []byte("meta")
)

type topicMeta struct {
	pruned   uint64
	count    uint64
	bytes    int64
	closedAt int64     // unix ns, 0 when open
	oldest   time.Time // not stored: the first event's time
}

func (m topicMeta) encode() []byte {
	b := make([]byte, 32)
	putU64(b[0:], m.pruned)
	putU64(b[8:], m.count)
	putU64(b[16:], uint64(m.bytes))
	putU64(b[24:], uint64(m.closedAt))
	return b
}

func readTopicMeta(tb *bolt.Bucket) (topicMeta, error) {
	b := tb.Get(keyTopicMeta)
	if len(b) != 32 {
		return topicMeta{}, fmt.Errorf("corrupt topic meta (%d bytes)", len(b))
	}
	return topicMeta{
		pruned:   getU64(b[0:]),
		count:    getU64(b[8:]),
		bytes:    int64(getU64(b[16:])),
		closedAt: int64(getU64(b[24:])),
	}, nil
}

// An event record: a CRC-32C of the rest (4 bytes), then time (unix ns, 8
// bytes), uvarints cost and type length, the type and the data. bbolt
// checks its pages' structure, not the values in them: the checksum is what
// tells a damaged record from data, so it is never served as an event.
func encodeEvent(e *Event, cost int64) []byte {
	b := make([]byte, 4+8, 4+8+2*10+len(e.Type)+len(e.Data))
	putU64(b[4:], uint64(e.Time.UnixNano()))
	b = appendUvarint(b, uint64(cost))
	b = appendUvarint(b, uint64(len(e.Type)))
	b = append(b, e.Type...)
	b = append(b, e.Data...)
	binary.BigEndian.PutUint32(b, crc32.Checksum(b[4:], castagnoli))
	return b
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errChecksum = errors.New("event record fails its checksum")

// recordBody returns a record without its checksum (checksummed: the
// record has one, see File.checksummedAfter); with verify, it fails unless
// the checksum matches. Pruning reads only the record's head and does not
// verify: it deletes what it reads.
func recordBody(v []byte, checksummed, verify bool) ([]byte, error) {
	if !checksummed {
		return v, nil
	}
	if len(v) < 4 {
		return nil, errCorruptRecord
	}
	if verify && binary.BigEndian.Uint32(v) != crc32.Checksum(v[4:], castagnoli) {
		return nil, errChecksum
	}
	return v[4:], nil
}

type eventHead struct {
	at   time.Time
	cost int64
	rest []byte // type length, type, data
}

var errCorruptRecord = errors.New("corrupt event record")

func decodeHead(v []byte) (eventHead, error) {
	if len(v) < 8 {
		return eventHead{}, errCorruptRecord
	}
	at := time.Unix(0, int64(getU64(v)))
	cost, n := uvarint(v[8:])
	if n <= 0 {
		return eventHead{}, errCorruptRecord
	}
	return eventHead{at: at, cost: int64(cost), rest: v[8+n:]}, nil
}

// headOf returns the record of seq without its checksum, unverified, for
// reading its head: what loading needs of the oldest record.
func (f *File) headOf(seq uint64, v []byte) []byte {
	body, _ := recordBody(v, seq > f.checksummedAfter, false)
	return body
}

func (f *File) decodeEvent(seq uint64, v []byte, framer Framer) (*Event, error) {
	body, err := recordBody(v, seq > f.checksummedAfter, true)
	if err != nil {
		return nil, err
	}
	h, err := decodeHead(body)
	if err != nil {
		return nil, err
	}
	tl, n := uvarint(h.rest)
	if n <= 0 || uint64(len(h.rest)-n) < tl {
		return nil, errCorruptRecord
	}
	typ := string(h.rest[n : n+int(tl)])
	// v lives in the mmap only during the transaction: copy.
	data := append([]byte(nil), h.rest[n+int(tl):]...)
	id := f.id(seq)
	return &Event{ID: id, Type: typ, Data: data, Time: h.at, Frame: framer(id, typ, data), seq: seq}, nil
}

// A dedup record: time (unix ns), count, the seqs of the batch.
func encodeDedup(at time.Time, events []*Event) []byte {
	b := make([]byte, 8, 8+10*(len(events)+1))
	putU64(b, uint64(at.UnixNano()))
	b = appendUvarint(b, uint64(len(events)))
	for _, e := range events {
		b = appendUvarint(b, e.seq)
	}
	return b
}

func decodeDedup(v []byte) (time.Time, []uint64, error) {
	bad := errors.New("corrupt dedup record")
	if len(v) < 8 {
		return time.Time{}, nil, bad
	}
	at := time.Unix(0, int64(getU64(v)))
	v = v[8:]
	n, k := uvarint(v)
	if k <= 0 || n > uint64(len(v)) {
		return time.Time{}, nil, bad
	}
	v = v[k:]
	seqs := make([]uint64, n)
	for i := range seqs {
		s, k := uvarint(v)
		if k <= 0 {
			return time.Time{}, nil, bad
		}
		seqs[i] = s
		v = v[k:]
	}
	return at, seqs, nil
}

func putU64(b []byte, v uint64)               { binary.BigEndian.PutUint64(b, v) }
func getU64(b []byte) uint64                  { return binary.BigEndian.Uint64(b) }
func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func uvarint(b []byte) (uint64, int)          { return binary.Uvarint(b) }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	putU64(b, v)
	return b
}

func readU64(b []byte) (uint64, bool) {
	if len(b) != 8 {
		return 0, false
	}
	return getU64(b), true
}

func seqOf(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return getU64(k)
}
