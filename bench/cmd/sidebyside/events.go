package main

// Benchmark event data: realistic JSON change events of about 200 bytes or
// 2 KiB, each starting with the seq and the send timestamp that subscribers
// read back.

import (
	"math/rand/v2"
	"strconv"
)

var (
	words = []string{"alpine", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor",
		"indigo", "juniper", "kestrel", "lagoon", "meadow", "nectar", "obsidian", "prairie",
		"quartz", "river", "sierra", "tundra", "umber", "valley", "willow", "yarrow", "zephyr"}
	statuses   = []string{"pending", "paid", "packed", "shipped", "delivered", "refunded"}
	currencies = []string{"EUR", "USD", "GBP", "CHF", "JPY"}
	events     = []string{"order.updated", "order.created", "payment.captured", "shipment.moved"}
)

// eventGen makes events; not safe for concurrent use (one per publisher).
type eventGen struct {
	r *rand.Rand
}

func newEventGen(seed uint64) *eventGen {
	return &eventGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (g *eventGen) hex(dst []byte, n int) []byte {
	const digits = "0123456789abcdef"
	for range n {
		dst = append(dst, digits[g.r.IntN(16)])
	}
	return dst
}

func (g *eventGen) pick(s []string) string { return s[g.r.IntN(len(s))] }

func (g *eventGen) timestamp(dst []byte) []byte {
	dst = append(dst, "2026-11-"...)
	dst = strconv.AppendInt(dst, int64(10+g.r.IntN(18)), 10)
	dst = append(dst, 'T')
	dst = strconv.AppendInt(dst, int64(10+g.r.IntN(13)), 10)
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, int64(10+g.r.IntN(49)), 10)
	dst = append(dst, ':')
	dst = strconv.AppendInt(dst, int64(10+g.r.IntN(49)), 10)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, int64(100+g.r.IntN(899)), 10)
	return append(dst, 'Z')
}

// event appends a JSON event of about size bytes (at least the header).
func (g *eventGen) event(dst []byte, size int, seq, ts int64) []byte {
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, g.pick(events)...)
	dst = append(dst, `","id":"ord_`...)
	dst = g.hex(dst, 12)
	dst = append(dst, `","customer":"cus_`...)
	dst = g.hex(dst, 8)
	dst = append(dst, `","at":"`...)
	dst = g.timestamp(dst)
	dst = append(dst, `","changes":{"status":["`...)
	dst = append(dst, g.pick(statuses)...)
	dst = append(dst, `","`...)
	dst = append(dst, g.pick(statuses)...)
	dst = append(dst, `"],"amount":`...)
	dst = strconv.AppendInt(dst, int64(g.r.IntN(100000)), 10)
	dst = append(dst, `,"currency":"`...)
	dst = append(dst, g.pick(currencies)...)
	dst = append(dst, `"}`...)
	if size > 400 {
		dst = append(dst, `,"items":[`...)
		first := true
		for len(dst)-start < size-140 {
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, `{"sku":"`...)
			dst = g.hex(dst, 10)
			dst = append(dst, `","name":"`...)
			dst = append(dst, g.pick(words)...)
			dst = append(dst, ' ')
			dst = append(dst, g.pick(words)...)
			dst = append(dst, `","qty":`...)
			dst = strconv.AppendInt(dst, int64(1+g.r.IntN(9)), 10)
			dst = append(dst, `,"price":`...)
			dst = strconv.AppendInt(dst, int64(g.r.IntN(50000)), 10)
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `,"note":"`...)
	for len(dst)-start < size-2 {
		dst = append(dst, g.pick(words)...)
		dst = append(dst, ' ')
	}
	if dst[len(dst)-1] == ' ' {
		dst = dst[:len(dst)-1]
	}
	return append(dst, `"}`...)
}
