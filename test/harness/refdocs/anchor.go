package refdocs

import (
	"strconv"
	"strings"
	"unicode"
)

// Anchor is the id GitHub gives a Markdown heading whose text (markup taken out: the
// words of a code span, a link's text) is text: lower case, every character but a
// letter, a mark, a digit, an underscore, a hyphen or a space taken out, and each space
// made a hyphen. A page's second heading of the same id gets -1, the third -2 (Anchors).
func Anchor(text string) string {
	var out strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case r == ' ':
			out.WriteRune('-')
		case r == '-' || unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r) || unicode.Is(unicode.Pc, r):
			out.WriteRune(r)
		}
	}
	return out.String()
}

// Anchors are the ids of a page's headings, in order: Anchor of each, with -1, -2, ...
// added to the second, third, ... heading of the same id.
func Anchors(headings []string) []string {
	seen := map[string]int{}
	out := make([]string, len(headings))
	for i, h := range headings {
		id := Anchor(h)
		if n := seen[id]; n > 0 {
			out[i] = id + "-" + strconv.Itoa(n)
		} else {
			out[i] = id
		}
		seen[id]++
	}
	return out
}
