package topic_test

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/ssegate/caddy-sse/topic"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		max     int
		wantErr string // a part of the message, "" for valid
	}{
		{"/events/a", 256, ""},
		{"news", 4, ""},
		{"https://example.com/books/1", 0, ""},
		{"/ünïcödé/日本", 256, ""},
		{"/a b", 256, ""},
		{"", 256, "empty topic name"},
		{"news", 3, "4 bytes, longer than the limit of 3"},
		{strings.Repeat("x", 10000), 0, ""},
		{"/a\xffb", 256, "not valid UTF-8"},
		{"/a\x00b", 256, "control character U+0000"},
		{"/a\nb", 256, "control character U+000A"},
		{"/a\rb", 256, "control character U+000D"},
		{"/a\tb", 256, "control character U+0009"},
		{"/a\x7fb", 256, "control character U+007F"},
		{"/a\u0085b", 256, "control character U+0085"}, // NEL, C1
		{"/a\u009fb", 256, "control character U+009F"},
		{"/a\u2028b", 256, "separator U+2028"},
		{"/a\u2029b", 256, "separator U+2029"},
	} {
		err := topic.Validate(tc.name, tc.max)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("Validate(%q, %d) = %v, want nil", tc.name, tc.max, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("Validate(%q, %d) = nil, want an error with %q", tc.name, tc.max, tc.wantErr)
		case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("Validate(%q, %d) = %q, want it to contain %q", tc.name, tc.max, err, tc.wantErr)
		case err != nil && !strings.HasPrefix(err.Error(), "topic: "):
			t.Errorf("Validate(%q) = %q: not prefixed like the handler's errors", tc.name, err)
		}
	}
}

func TestPatternMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"/events/a", []string{"/events/a"}, []string{"/events/ab", "/events/", "/events/a/", "/Events/a"}},
		{"/users/*/feed", []string{"/users/42/feed", "/users//feed", "/users/a.b/feed"},
			[]string{"/users/42/x/feed", "/users/42/feed/", "/users/feed"}},
		{"/users/*", []string{"/users/42", "/users/"}, []string{"/users", "/users/42/feed"}},
		{"/logs/**", []string{"/logs/", "/logs/a", "/logs/a/b/c"}, []string{"/logs", "/log/a"}},
		{"**", []string{"/", "anything/at/all", "x"}, nil},
		{"*", []string{"news", "a.b"}, []string{"/news", "a/b"}},
		{"/t/**/end", []string{"/t//end", "/t/a/end", "/t/a/b/end"}, []string{"/t/end", "/t/a/b/end/"}},
		{"/t/*-x/**", []string{"/t/a-x/", "/t/-x/b/c"}, []string{"/t/a/b-x/c"}},
		{"/a.b/(c)+[d]", []string{"/a.b/(c)+[d]"}, []string{"/aXb/(c)+[d]", "/a.b/cc[d]"}},
		{"https://example.com/books/*", []string{"https://example.com/books/1"}, []string{"https://example.com/books/1/reviews"}},
		{"/ü/*/日本", []string{"/ü/ä/日本"}, []string{"/ü/ä/b/日本"}},
		{"/{id}", []string{"/{id}"}, []string{"/42"}}, // URI templates are literal
	} {
		p, err := topic.Compile(tc.pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tc.pattern, err)
		}
		if p.String() != tc.pattern {
			t.Errorf("String() = %q, want %q", p.String(), tc.pattern)
		}
		for _, name := range tc.match {
			if !p.Match(name) {
				t.Errorf("%q does not match %q, want a match", tc.pattern, name)
			}
		}
		for _, name := range tc.noMatch {
			if p.Match(name) {
				t.Errorf("%q matches %q, want none", tc.pattern, name)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"", "empty"},
		{"/a/***", "three or more stars"},
		{"/a\nb", "control character"},
		{"/a\xff", "UTF-8"},
	} {
		_, err := topic.Compile(tc.pattern)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Compile(%q) = %v, want an error with %q", tc.pattern, err, tc.want)
		}
	}
	if _, err := topic.CompileSet([]string{"/ok", "/a/****"}); err == nil {
		t.Error("CompileSet accepted an invalid pattern")
	}
}

func TestZeroPatternAndSet(t *testing.T) {
	var p topic.Pattern
	if p.Match("") || p.Match("/a") {
		t.Error("the zero Pattern matches")
	}
	s, err := topic.CompileSet([]string{"/a", "/b/*"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"/a": true, "/b/c": true, "/b/c/d": false, "/c": false} {
		if got := s.Match(name); got != want {
			t.Errorf("Set.Match(%q) = %v, want %v", name, got, want)
		}
	}
	if !topic.MustCompile("/x").Literal() || topic.MustCompile("/x/*").Literal() {
		t.Error("Literal is wrong")
	}
}

// match is the reference the fuzz test compares Compile's matcher with: a
// plain backtracking reading of the rules.
func match(pattern, name string) bool {
	switch {
	case pattern == "":
		return name == ""
	case strings.HasPrefix(pattern, "**"):
		for i := 0; i <= len(name); i++ {
			if match(pattern[2:], name[i:]) {
				return true
			}
		}
		return false
	case pattern[0] == '*':
		for i := 0; i <= len(name); i++ {
			if match(pattern[1:], name[i:]) {
				return true
			}
			if i < len(name) && name[i] == '/' {
				return false
			}
		}
		return false
	default:
		return name != "" && name[0] == pattern[0] && match(pattern[1:], name[1:])
	}
}

func FuzzPattern(f *testing.F) {
	for _, seed := range [][2]string{
		{"/a/*", "/a/b"}, {"/a/**", "/a/b/c"}, {"*/*", "a/b"}, {"**/x/*", "a/b/x/y"},
		{"/t/*-x/**", "/t/a-x/b"}, {"a*b*c", "aXbYc"}, {"**a**", "bab"}, {"/ü/*", "/ü/é"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern) > 64 || len(name) > 64 {
			return // the reference backtracks exponentially
		}
		p, err := topic.Compile(pattern)
		if err != nil {
			if topic.Validate(pattern, 0) == nil && !strings.Contains(pattern, "***") {
				t.Fatalf("Compile(%q) = %v for a valid pattern", pattern, err)
			}
			return
		}
		if topic.Validate(name, 0) != nil {
			return
		}
		if got, want := p.Match(name), match(pattern, name); got != want {
			t.Fatalf("Compile(%q).Match(%q) = %v, the reference says %v", pattern, name, got, want)
		}
	})
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{"/a", "", "\x00", "\u2028", "\u0085", "\xff", "日本"} {
		f.Add(s, 8)
	}
	f.Fuzz(func(t *testing.T, name string, max int) {
		err := topic.Validate(name, max)
		valid := name != "" && (max <= 0 || len(name) <= max) && utf8.ValidString(name) &&
			!strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' })
		if (err == nil) != valid {
			t.Fatalf("Validate(%q, %d) = %v, want valid=%v", name, max, err, valid)
		}
	})
}
