package replay

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Subscribe implements Store.
func (f *File) Subscribe(_ context.Context, topic, from string, onGap GapPolicy) (Cursor, error) {
	var c *fileCursor
	err := f.withTopic(topic, func(t *fileTopic, cfg *Config) error {
		lc, err := t.subscribe(cfg, from, onGap)
		c = &fileCursor{logCursor: lc, topic: t}
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// fileCursor reads a fileTopic: its log's cursor, reading events older
// than the cache from the file.
type fileCursor struct {
	logCursor
	topic *fileTopic
}

// Next implements Cursor. Recent events come from the topic's cache; older
// ones are read from the file.
func (c *fileCursor) Next(max int) (Page, error) {
	t := c.topic
	p, damaged, err := c.next(atLeastOne(max))
	// Outside the topic's lock: the hook is the caller's code.
	t.store.reportUnreadable(damaged)
	return p, err
}

func (c *fileCursor) next(max int) (Page, []damagedRecord, error) {
	t := c.topic
	t.mu.Lock()
	defer t.mu.Unlock()
	var p Page
	if err := c.start(&p); err != nil {
		return Page{}, nil, err
	}
	var damaged []damagedRecord
	if c.after < t.cacheFrom {
		var stopped bool
		var err error
		damaged, stopped, err = t.store.readFile(c, &p, max)
		if err != nil {
			return Page{}, damaged, err
		}
		if stopped {
			p.stopEarly()
			return p, damaged, nil
		}
	}
	c.read(&p, max)
	return p, damaged, nil
}

// damagedRecord is an event record readFile could not read.
type damagedRecord struct {
	unreadableRecord
	err error
}

type unreadableRecord struct {
	topic string
	seq   uint64
}

// reportUnreadable tells Config.OnUnreadable of the damaged records it has
// not been told of yet.
func (f *File) reportUnreadable(damaged []damagedRecord) {
	if len(damaged) == 0 {
		return
	}
	f.unreadableMu.Lock()
	fresh := damaged[:0]
	for _, d := range damaged {
		if !f.unreadable[d.unreadableRecord] {
			if f.unreadable == nil {
				f.unreadable = make(map[unreadableRecord]bool)
			}
			f.unreadable[d.unreadableRecord] = true
			fresh = append(fresh, d)
		}
	}
	f.unreadableMu.Unlock()
	if hook := f.cfg.Load().OnUnreadable; hook != nil {
		for _, d := range fresh {
			hook(d.topic, f.id(d.seq), d.err)
		}
	}
}

// readFile reads events older than the cache from the file. Callers hold
// t.mu. The file may be a commit ahead of memory (a prune committed, not yet
// applied): the file's pruned mark is checked too.
//
// A record that cannot be read is skipped with a GapUnreadable gap, so that
// one damaged record costs its readers that event, not the stream. A gap
// goes before the events it precedes: when p already holds events or
// another gap, readFile stops at the damage (stopped) and the next read
// reports it.
func (f *File) readFile(c *fileCursor, p *Page, max int) (damaged []damagedRecord, stopped bool, err error) {
	t := c.topic
	framer := f.cfg.Load().Framer
	if framer == nil {
		return nil, false, errors.New("replay: file store has no Framer")
	}
	err = f.view(func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTopics).Bucket([]byte(t.name))
		if tb == nil {
			return nil
		}
		m, err := readTopicMeta(tb)
		if err != nil {
			return err
		}
		c.behind(p, m.pruned)
		eb := tb.Bucket(bucketEvents)
		if eb == nil || c.after >= t.cacheFrom {
			return nil
		}
		cur := eb.Cursor()
		for k, v := cur.Seek(u64(c.after + 1)); k != nil && len(p.Events) < max; k, v = cur.Next() {
			seq := seqOf(k)
			if seq > t.cacheFrom {
				break
			}
			e, err := f.decodeEvent(seq, v, framer)
			if err != nil {
				if len(p.Events) > 0 || (p.Gap != nil && p.Gap.Reason != GapUnreadable) {
					stopped = true
					return nil
				}
				if p.Gap == nil {
					p.Gap = &Gap{Reason: GapUnreadable, Requested: f.id(c.after)}
				}
				c.after = seq
				p.Gap.ResumeAfter = f.id(seq)
				damaged = append(damaged, damagedRecord{
					unreadableRecord{t.name, seq},
					fmt.Errorf("file store %s: topic %q, event %s: %w", f.path, t.name, f.id(seq), err),
				})
				continue
			}
			p.Events = append(p.Events, e)
			c.after = seq
		}
		return nil
	})
	return damaged, stopped, err
}
