package redisstore

import "testing"

// Slots as Redis Cluster computes them (CLUSTER KEYSLOT).
func TestSlotOf(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":               12739, // the CRC16 check value 0x31C3
		"foo":                     12182,
		"bar":                     5061,
		"sse:{foo}:log":           12182,
		"{user1000}.following":    3443,
		"foo{}{bar}":              8363, // an empty tag: the whole key
		"foo{{bar}}zap":           4015, // the tag is "{bar"
		"sse:{/events/room}:meta": slotOf("/events/room"),
	} {
		if got := slotOf(key); got != want {
			t.Errorf("slotOf(%q) = %d, want %d", key, got, want)
		}
	}
}
