package replay

import "time"

// janitor prunes by age and dedup window and forgets idle topics, every
// second.
func (f *File) janitor() {
	defer close(f.janitorDone)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-f.stopJanitor:
			return
		case <-tick.C:
			if f.cfg.Load().Framer != nil { // configured for use
				f.sweep(false)
			}
		}
	}
}

// sweep queues prunes where bounds are exceeded (all topics with events when
// all), and forgets the topics that hold nothing worth remembering; with
// all, it waits for the prunes to be durable.
func (f *File) sweep(all bool) {
	cfg := f.cfg.Load()
	now := f.now()
	var ops []*fileOp
	f.mu.Lock()
	for name, t := range f.topics {
		t.mu.Lock()
		drop := t.dedupTrim(now, cfg, true)
		over := t.count > 0 && (all || cfg.Exceeds(int(t.count), t.bytes, t.oldest, now))
		if (over || len(drop) > 0) && (!t.pruneQueued || all) {
			op := &fileOp{topic: t, name: name, initPruned: t.pruned, prune: true, dropKeys: drop, done: make(chan error, 1)}
			if f.enqueue(op) == nil {
				t.pending++
				t.pruneQueued = true
				ops = append(ops, op)
			}
		} else if t.pending == 0 && t.count == 0 && t.idle(cfg, now) {
			t.forgotten = true
			t.releaseSlot()
			f.forgotten = max(f.forgotten, t.pruned)
			delete(f.topics, name)
			// Queued under f.mu: the ops of a topic created again by this
			// name come after it.
			_ = f.enqueue(&fileOp{name: name, forget: true, forgotten: f.forgotten, done: make(chan error, 1)})
		}
		t.mu.Unlock()
	}
	f.mu.Unlock()
	if all {
		for _, op := range ops {
			<-op.committed
		}
	}
}
