package freeport

import "testing"

func TestGetNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := Get(t)
		if p < portBase || p >= portBase+portRange {
			t.Fatalf("port %d outside [%d, %d)", p, portBase, portBase+portRange)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
