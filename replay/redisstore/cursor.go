package redisstore

import (
	"sort"

	"github.com/ssegate/caddy-sse/replay"
)

// cursor is one local subscriber's position: the id after which it reads.
type cursor struct {
	t      *topic
	onGap  replay.GapPolicy
	after  streamID
	gap    *replay.Gap
	closed bool
	// epoch of the window the cursor's position refers to.
	epoch uint64
}

// Next implements replay.Cursor. It reads the window only: it never waits
// for Redis.
func (c *cursor) Next(max int) (replay.Page, error) {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed || t.s.closed.Load() {
		return replay.Page{}, replay.ErrStoreClosed
	}
	if max < 1 {
		max = 1
	}
	p := replay.Page{Gap: c.gap}
	c.gap = nil
	if c.epoch != t.epoch {
		// The window was reloaded because Redis lost the history this
		// position is in: the id is unknown now, as on any other node.
		c.epoch = t.epoch
		if c.after != (streamID{}) {
			requested := c.after.String()
			c.after = t.gapTarget(c.onGap, t.end)
			if p.Gap != nil {
				p.Gap.ResumeAfter = c.after.String()
			} else {
				p.Gap = &replay.Gap{Reason: replay.GapUnknown, Requested: requested, ResumeAfter: c.after.String()}
			}
		}
	}
	if c.after.less(t.floor) {
		requested := c.after.String()
		c.after = t.gapTarget(c.onGap, t.end)
		p.FellBehind(requested, c.after.String())
	}
	i := sort.Search(len(t.meta), func(i int) bool { return c.after.less(t.meta[i].id) })
	if i < len(t.events) {
		j := min(i+max, len(t.events))
		p.Events = t.events[i:j:j]
		c.after = t.meta[j-1].id
	}
	if i+len(p.Events) == len(t.events) {
		p.Closed = t.closed
	}
	if len(p.Events) == 0 && !p.Closed {
		p.Wait = t.wake
	}
	return p, nil
}

// Notify implements replay.Notifier: fn is called once the window changes
// after wait, which must be the Wait of the cursor's last page (the
// topic's wake channel), is armed. It reports false when wait is closed
// already. fn runs with the topic's lock held, from whatever goroutine
// changed the window: it only hands the wake-up over.
func (c *cursor) Notify(wait <-chan struct{}, key any, fn func()) bool {
	t := c.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed || wait != t.wake {
		return false
	}
	if t.woken == nil {
		t.woken = make(map[any]func())
	}
	t.woken[key] = fn
	return true
}

// Position implements replay.Cursor.
func (c *cursor) Position() string {
	c.t.mu.Lock()
	defer c.t.mu.Unlock()
	return c.after.String()
}

// Close implements replay.Cursor.
func (c *cursor) Close() {
	t := c.t
	t.mu.Lock()
	if c.closed {
		t.mu.Unlock()
		return
	}
	c.closed = true
	t.subscribers--
	delete(t.woken, c) // a composite's registration (see replay.Compose)
	t.mu.Unlock()
	t.s.release(t)
}

// Interface guards
var (
	_ replay.Store    = (*Store)(nil)
	_ replay.Shared   = (*Store)(nil)
	_ replay.Cursor   = (*cursor)(nil)
	_ replay.Notifier = (*cursor)(nil)
)
