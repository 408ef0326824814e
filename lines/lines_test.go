package lines

import (
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
)

// splitAll reads every line, as strings; too-long lines as "SKIP:<len>".
func splitAll(t testing.TB, r io.Reader, max int, sse bool) ([]string, error) {
	t.Helper()
	sp := NewSplitter(r, max, sse)
	var out []string
	for {
		l, err := sp.Next()
		if sp.Buffered() > max+2 {
			t.Fatalf("splitter holds %d bytes, max_line is %d", sp.Buffered(), max)
		}
		if err != nil {
			return out, err
		}
		if l.TooLong {
			out = append(out, "SKIP:"+strconv.FormatInt(l.Len, 10))
			continue
		}
		if len(l.Text) > max {
			t.Fatalf("line of %d bytes returned, max %d", len(l.Text), max)
		}
		out = append(out, string(l.Text))
	}
}

func TestSplitterNDJSON(t *testing.T) {
	cases := []struct {
		name, in string
		max      int
		want     []string
	}{
		{"plain", "a\nb\n", 10, []string{"a", "b"}},
		{"crlf", "a\r\nb\r\n", 10, []string{"a", "b"}},
		{"bom", "\xEF\xBB\xBFa\nb\n", 10, []string{"a", "b"}},
		{"bom only once", "\xEF\xBB\xBFa\n\xEF\xBB\xBFb\n", 10, []string{"a", "\xEF\xBB\xBFb"}},
		{"blank lines", "\n\r\n  \t\na\n\n\nb\n \n", 10, []string{"a", "b"}},
		{"last line without newline", "a\nb", 10, []string{"a", "b"}},
		{"last line CR without LF", "a\nb\r", 10, []string{"a", "b"}},
		{"lone CR is data", "a\rb\n", 10, []string{"a\rb"}},
		{"exactly max", "abcde\r\nfghij\n", 5, []string{"abcde", "fghij"}},
		{"one over max", "abcdef\nab\n", 5, []string{"SKIP:6", "ab"}},
		{"one over max with CR", "abcdef\r\nab\n", 5, []string{"SKIP:7", "ab"}},
		{"long at end", "ab\nabcdefghijk", 5, []string{"ab", "SKIP:11"}},
		{"long then short", strings.Repeat("x", 100) + "\nok\n", 5, []string{"SKIP:100", "ok"}},
		{"empty", "", 5, nil},
		{"bom alone", "\xEF\xBB\xBF", 5, nil},
		{"partial bom", "\xEF\xBB", 5, []string{"\xEF\xBB"}},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, c := range cases {
		for rn, wrap := range readers {
			t.Run(c.name+"/"+rn, func(t *testing.T) {
				got, err := splitAll(t, wrap(strings.NewReader(c.in)), c.max, false)
				if err != io.EOF {
					t.Fatalf("err = %v", err)
				}
				if strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
					t.Fatalf("got %q, want %q", got, c.want)
				}
			})
		}
	}
}

func TestSplitterLineNumbers(t *testing.T) {
	sp := NewSplitter(strings.NewReader("a\n\nxxxxxxxxxx\nb\n"), 4, false)
	var ns []int
	for {
		l, err := sp.Next()
		if err != nil {
			break
		}
		ns = append(ns, l.N)
	}
	if want := []int{1, 3, 4}; len(ns) != 3 || ns[0] != want[0] || ns[1] != want[1] || ns[2] != want[2] {
		t.Fatalf("line numbers %v, want %v", ns, want)
	}
}

// A 5 MiB line between good lines is skipped while the splitter never
// holds more than max_line.
func TestSplitterHugeLine(t *testing.T) {
	const max = 1 << 20
	in := io.MultiReader(strings.NewReader(`{"n":1}`+"\n"),
		io.LimitReader(repeatReader('x'), 5<<20),
		strings.NewReader("\n"+`{"n":2}`+"\n"))
	got, err := splitAll(t, in, max, false)
	if err != io.EOF {
		t.Fatal(err)
	}
	want := []string{`{"n":1}`, "SKIP:5242880", `{"n":2}`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", got)
	}
}

type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

func TestSplitterErrorDropsPartialLine(t *testing.T) {
	boom := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader("a\nb\n{\"half"), iotest.ErrReader(boom))
	sp := NewSplitter(r, 100, false)
	var got []string
	var err error
	for {
		var l Line
		if l, err = sp.Next(); err != nil {
			break
		}
		got = append(got, string(l.Text))
	}
	if !errors.Is(err, boom) || strings.Join(got, "|") != "a|b" || !sp.Partial() {
		t.Fatalf("got %q, %v, partial %v", got, err, sp.Partial())
	}
}

func TestSplitterSSE(t *testing.T) {
	in := "\xEF\xBB\xBFdata: a\r\rdata: b\r\n\r\ndata: c\n\n: x\rdata: " + strings.Repeat("y", 50) + "\r\nid: 1\n"
	want := []string{"data: a", "", "data: b", "", "data: c", "", ": x", "SKIP:56", "id: 1"}
	for _, wrap := range []func(io.Reader) io.Reader{func(r io.Reader) io.Reader { return r }, iotest.OneByteReader, iotest.HalfReader} {
		got, err := splitAll(t, wrap(strings.NewReader(in)), 20, true)
		if err != io.EOF {
			t.Fatal(err)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("got %q\nwant %q", got, want)
		}
	}
}

func TestSplitterSSECRAtChunkEnd(t *testing.T) {
	// The CR of a CRLF at the end of one read and the LF at the start of
	// the next make one line end, not two.
	r := io.MultiReader(strings.NewReader("data: a\r"), strings.NewReader("\ndata: b\r"), strings.NewReader("\n\r\n"))
	got, err := splitAll(t, r, 100, true)
	if err != io.EOF || strings.Join(got, "|") != "data: a|data: b|" {
		t.Fatalf("got %q, %v", got, err)
	}
}
