// Package topic says what a topic name may be and matches names against
// patterns. It is the one place where both rules live: the handler checks
// every name it serves with Validate, and authorization grants topics by
// Pattern.
package topic

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ssegate/caddy-sse/wire"
)

// Validate reports whether name may name a topic: it must not be empty, be
// at most maxLen bytes long (maxLen <= 0: no limit), be valid UTF-8, and
// contain no control characters (C0, DEL and C1, as unicode.IsControl says)
// nor the line and paragraph separators U+2028 and U+2029, which some
// JavaScript and log readers take for line breaks.
func Validate(name string, maxLen int) error {
	switch {
	case name == "":
		return errors.New("topic: empty topic name")
	case maxLen > 0 && len(name) > maxLen:
		return fmt.Errorf("topic: name is %d bytes, longer than the limit of %d", len(name), maxLen)
	case !utf8.ValidString(name):
		return errors.New("topic: name is not valid UTF-8")
	}
	// The same rule as event names and ids: a topic name is echoed in
	// reset and close events and in logs.
	for _, r := range name {
		if wire.Forbidden(r) {
			if unicode.IsControl(r) {
				return fmt.Errorf("topic: name contains control character %U", r)
			}
			return fmt.Errorf("topic: name contains line or paragraph separator %U", r)
		}
	}
	return nil
}

// A Pattern matches topic names. In a pattern, `*` stands for any run of
// characters within one path segment (it never matches `/`), `**` for any
// run of characters at all, `/` included; every other character stands for
// itself. Both may match nothing: `/users/*/feed` matches `/users/42/feed`
// and `/users//feed`, and `/logs/**` matches `/logs/`, `/logs/a` and
// `/logs/a/b`, but not `/logs`. A pattern without stars matches exactly
// the name it spells. Three or more stars in a row are an error, since what
// they mean is not obvious.
//
// The zero Pattern matches nothing. A Pattern is safe for concurrent use.
type Pattern struct {
	src string
	// kind says how Match works: by equality, by prefix, or by re.
	kind   kind
	prefix string
	re     *regexp.Regexp
}

type kind uint8

const (
	kindNone kind = iota
	kindLiteral
	kindPrefix // literal prefix followed by one trailing **
	kindAll    // exactly **
	kindRegexp
)

// Compile parses a pattern. The pattern must itself be valid as a topic
// name (see Validate, without a length limit).
func Compile(pattern string) (Pattern, error) {
	if err := Validate(pattern, 0); err != nil {
		return Pattern{}, fmt.Errorf("pattern %q: %w", pattern, err)
	}
	if strings.Contains(pattern, "***") {
		return Pattern{}, fmt.Errorf("pattern %q: three or more stars in a row; use * within a segment or ** across segments", pattern)
	}
	p := Pattern{src: pattern}
	first := strings.IndexByte(pattern, '*')
	switch {
	case first < 0:
		p.kind = kindLiteral
	case pattern == "**":
		p.kind = kindAll
	case first == len(pattern)-2 && strings.HasSuffix(pattern, "**"):
		p.kind, p.prefix = kindPrefix, pattern[:first]
	default:
		var b strings.Builder
		b.WriteString(`^(?s:`)
		for rest := pattern; rest != ""; {
			i := strings.IndexByte(rest, '*')
			if i < 0 {
				b.WriteString(regexp.QuoteMeta(rest))
				break
			}
			b.WriteString(regexp.QuoteMeta(rest[:i]))
			rest = rest[i:]
			if strings.HasPrefix(rest, "**") {
				b.WriteString(`.*`)
				rest = rest[2:]
			} else {
				b.WriteString(`[^/]*`)
				rest = rest[1:]
			}
		}
		b.WriteString(`)$`)
		re, err := regexp.Compile(b.String())
		if err != nil { // cannot happen: every literal is quoted
			return Pattern{}, fmt.Errorf("pattern %q: %w", pattern, err)
		}
		p.kind, p.re = kindRegexp, re
	}
	return p, nil
}

// MustCompile is Compile for patterns known to be valid; it panics on an
// error.
func MustCompile(pattern string) Pattern {
	p, err := Compile(pattern)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether name is matched by the pattern.
func (p Pattern) Match(name string) bool {
	switch p.kind {
	case kindLiteral:
		return name == p.src
	case kindPrefix:
		return strings.HasPrefix(name, p.prefix)
	case kindAll:
		return true
	case kindRegexp:
		return p.re.MatchString(name)
	}
	return false
}

// String returns the pattern as it was written.
func (p Pattern) String() string { return p.src }

// Literal reports whether the pattern has no stars, so that it matches only
// the name it spells.
func (p Pattern) Literal() bool { return p.kind == kindLiteral }

// Set is a list of patterns; a name is matched by the set when one of them
// matches it.
type Set []Pattern

// CompileSet compiles every pattern, or reports the first that is invalid.
func CompileSet(patterns []string) (Set, error) {
	s := make(Set, 0, len(patterns))
	for _, src := range patterns {
		p, err := Compile(src)
		if err != nil {
			return nil, err
		}
		s = append(s, p)
	}
	return s, nil
}

// Match reports whether one of the patterns matches name.
func (s Set) Match(name string) bool {
	for _, p := range s {
		if p.Match(name) {
			return true
		}
	}
	return false
}
