package replay

import (
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Inspector is implemented by stores that can say what they hold: the
// admin API lists topics through it. It is optional; a store without it
// is still served, only not described.
type Inspector interface {
	// Topics returns, in name order, up to limit topics (all when limit is
	// 0 or less) whose names start with prefix and sort after after. The
	// order is stable, so that after (the last name of a page) pages
	// through any number of topics.
	Topics(prefix, after string, limit int) ([]TopicInfo, error)
	// Topic describes one topic; ok is false when the store does not know
	// it.
	Topic(name string) (info TopicInfo, ok bool, err error)
}

// TopicInfo describes one topic of a store.
type TopicInfo struct {
	Name string
	// Events and Bytes are what the topic retains (Bytes as counted
	// against Config.MaxBytes).
	Events int
	Bytes  int64
	// FirstID and LastID are the ids of the oldest and newest retained
	// events; LastEvent is when the newest was accepted. All are zero
	// when nothing is retained.
	FirstID   string
	LastID    string
	LastEvent time.Time
	// Closed: the topic was ended (and is remembered for the history age).
	Closed bool
	// Subscribers is how many cursors are open on the topic in this
	// process.
	Subscribers int
}

// pageNames sorts the names that start with prefix and come after after,
// and keeps the first limit of them.
func pageNames(names []string, limit int) []string {
	sort.Strings(names)
	if limit > 0 && len(names) > limit {
		names = names[:limit]
	}
	return names
}

// matches reports whether name belongs on a page after after, under prefix.
func matches(name, prefix, after string) bool {
	return strings.HasPrefix(name, prefix) && name > after
}

// info describes t from memory. Callers hold t.mu.
func (t *topicLog) info(name string) TopicInfo {
	ti := TopicInfo{Name: name, Closed: t.closed, Subscribers: t.subscribers, Events: len(t.events), Bytes: t.eventBytes}
	if n := len(t.events); n > 0 {
		ti.FirstID = t.events[0].ID
		ti.LastID = t.events[n-1].ID
		ti.LastEvent = t.events[n-1].Time
	}
	return ti
}

// Topics implements Inspector.
func (m *Memory) Topics(prefix, after string, limit int) ([]TopicInfo, error) {
	if m.closed.Load() {
		return nil, ErrStoreClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for name := range m.topics {
		if matches(name, prefix, after) {
			names = append(names, name)
		}
	}
	names = pageNames(names, limit)
	infos := make([]TopicInfo, 0, len(names))
	for _, name := range names {
		t := m.topics[name]
		t.mu.Lock()
		infos = append(infos, t.info(name))
		t.mu.Unlock()
	}
	return infos, nil
}

// Topic implements Inspector.
func (m *Memory) Topic(name string) (TopicInfo, bool, error) {
	if m.closed.Load() {
		return TopicInfo{}, false, ErrStoreClosed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.topics[name]
	if !ok {
		return TopicInfo{}, false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.info(name), true, nil
}

// Topics implements Inspector. Counts come from memory; the oldest id and
// the newest event's time, when the cache of recent events does not have
// them, are read from the file.
func (f *File) Topics(prefix, after string, limit int) ([]TopicInfo, error) {
	if f.closed.Load() {
		return nil, ErrStoreClosed
	}
	f.mu.Lock()
	var names []string
	for name := range f.topics {
		if matches(name, prefix, after) {
			names = append(names, name)
		}
	}
	names = pageNames(names, limit)
	topics := make([]*fileTopic, len(names))
	for i, name := range names {
		topics[i] = f.topics[name]
	}
	f.mu.Unlock()
	return f.describe(topics)
}

// Topic implements Inspector.
func (f *File) Topic(name string) (TopicInfo, bool, error) {
	if f.closed.Load() {
		return TopicInfo{}, false, ErrStoreClosed
	}
	f.mu.Lock()
	t, ok := f.topics[name]
	f.mu.Unlock()
	if !ok {
		return TopicInfo{}, false, nil
	}
	infos, err := f.describe([]*fileTopic{t})
	if err != nil {
		return TopicInfo{}, false, err
	}
	return infos[0], true, nil
}

// describe reads the state of topics: counters from memory, the ends of
// their logs from the cache or, for what it does not hold, the file.
func (f *File) describe(topics []*fileTopic) ([]TopicInfo, error) {
	infos := make([]TopicInfo, len(topics))
	var fromFile []int
	for i, t := range topics {
		t.mu.Lock()
		ti := t.info(t.name)
		ti.Events, ti.Bytes = int(t.count), t.bytes
		if t.count > 0 && (len(t.events) == 0 || uint64(len(t.events)) < t.count) {
			// The cache lacks the oldest events (and, after a restart,
			// the newest): ask the file.
			fromFile = append(fromFile, i)
		}
		t.mu.Unlock()
		infos[i] = ti
	}
	if len(fromFile) == 0 {
		return infos, nil
	}
	err := f.view(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTopics)
		if tb == nil {
			return nil
		}
		for _, i := range fromFile {
			b := tb.Bucket([]byte(infos[i].Name))
			if b == nil {
				continue
			}
			eb := b.Bucket(bucketEvents)
			if eb == nil {
				continue
			}
			c := eb.Cursor()
			if k, _ := c.First(); k != nil {
				infos[i].FirstID = f.id(seqOf(k))
			}
			if k, v := c.Last(); k != nil && infos[i].LastID == "" {
				infos[i].LastID = f.id(seqOf(k))
				if h, err := decodeHead(f.headOf(seqOf(k), v)); err == nil {
					infos[i].LastEvent = h.at
				}
			}
		}
		return nil
	})
	return infos, err
}

// Interface guards
var (
	_ Inspector = (*Memory)(nil)
	_ Inspector = (*File)(nil)
)
