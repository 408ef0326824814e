package redisstore

import (
	"encoding/hex"
	"strings"
)

// topicKeys names the Redis keys of one topic (see the key layout in the
// package doc).
type topicKeys struct {
	log, meta, dedup, dedupOrder string
	// fences: lease name -> the highest fencing token a fenced append
	// to this topic carried (see the package doc, Leases).
	fences string
}

func (s *Store) topicKeys(name string) topicKeys {
	base := s.opts.Prefix + "{" + hashTag(name) + "}:"
	return topicKeys{log: base + "log", meta: base + "meta", dedup: base + "dedup", dedupOrder: base + "dedup:order", fences: base + "fences"}
}

// hashTag is the topic (or lease name) as it appears between the braces.
func hashTag(name string) string {
	if name == "" || strings.ContainsAny(name, "{}") || name[0] == '~' {
		return "~" + hex.EncodeToString([]byte(name))
	}
	return name
}
