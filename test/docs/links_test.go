package docs

import (
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/ast"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/text"

	"github.com/ha-injector/ha-injector/test/harness/controlplane"
	"github.com/ha-injector/ha-injector/test/harness/refdocs"
)

// TestMarkdownLinks checks every relative link and image of the repository's Markdown
// files (README.md, docs/, the chart's README, CHANGELOG.md, CONTRIBUTING.md,
// SECURITY.md: every *.md outside hidden, _output and testdata folders): the file or
// folder it names exists in the repository, and its #anchor, on a Markdown page, is
// the GitHub anchor of one of that page's headings. Links with a scheme (https:,
// mailto:) are not followed.
func TestMarkdownLinks(t *testing.T) {
	root, err := controlplane.RepoRoot()
	require.NoError(t, err)
	pages, err := markdownFiles(root)
	require.NoError(t, err)
	for _, want := range []string{"README.md", "CHANGELOG.md", "CONTRIBUTING.md", "SECURITY.md", "charts/ha-injector/README.md", "docs/reference/hapolicy.md"} {
		require.Contains(t, pages, want, "the pages checked")
	}
	c := newChecker(root)
	links := 0
	for _, page := range pages {
		n, problems, err := c.check(page)
		require.NoError(t, err)
		links += n
		for _, p := range problems {
			t.Error(p)
		}
	}
	// The README and the reference pages link to each other and within themselves.
	assert.Greater(t, links, 50, "relative links checked")
	t.Logf("%d relative links in %d Markdown files", links, len(pages))
}

// TestMarkdownLinksChecker holds the checker to a small tree of pages with the links
// GitHub follows and those it does not.
func TestMarkdownLinksChecker(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		path := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	}
	write("docs/guide.md", "# Guide\n\n## Install: step by step\n\n## FAQ\n\n## FAQ\n\n### `serve --port` (flags)\n\n<a id=\"legacy\"></a>\n")
	write("docs/img/x.png", "png")
	write("main.go", "package main\n")
	write("README.md", strings.Join([]string{
		"# Top",
		"",
		"[ok](docs/guide.md) [ok](docs/guide.md#install-step-by-step) [ok](docs/guide.md#faq-1)",
		"[ok](docs/guide.md#serve---port-flags) [ok](./docs/guide.md#legacy) [ok](#top) [ok](docs/)",
		"![ok](docs/img/x.png) [ok](main.go#L1) [ok](https://example.com/nope.md#x) [ok](mailto:a@b.c)",
		"[ok](/docs/guide.md#faq) [ok][ref] <a href=\"docs/guide.md#faq\">ok</a>",
		"",
		"[missing](docs/nope.md) [anchor](docs/guide.md#faq-2) [case](docs/guide.md#FAQ)",
		"[here](#nowhere) ![missing](docs/img/y.png) [outside](../x.md) <a href=\"docs/guide.md#no\">x</a>",
		"",
		"`[not a link](nope.md)`",
		"",
		"```",
		"[not a link](nope.md)",
		"```",
		"",
		"[ref]: docs/guide.md#install-step-by-step",
		"",
	}, "\n"))
	n, problems, err := newChecker(root).check("README.md")
	require.NoError(t, err)
	assert.Equal(t, 19, n, "relative links found")
	assert.Equal(t, []string{
		"README.md:8: docs/nope.md: no such file",
		"README.md:8: docs/guide.md#faq-2: no heading of docs/guide.md has the anchor faq-2",
		"README.md:8: docs/guide.md#FAQ: no heading of docs/guide.md has the anchor FAQ",
		"README.md:9: #nowhere: no heading of README.md has the anchor nowhere",
		"README.md:9: docs/img/y.png: no such file",
		"README.md:9: ../x.md: outside the repository",
		"README.md:9: docs/guide.md#no: no heading of docs/guide.md has the anchor no",
	}, problems)
}

// markdownFiles lists the Markdown files under root, relative to it, with forward slashes.
func markdownFiles(root string) ([]string, error) {
	var pages []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && ((strings.HasPrefix(name, ".") && name != ".github") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".md") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			pages = append(pages, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(pages)
	return pages, err
}

type checker struct {
	root    string
	md      goldmark.Markdown
	anchors map[string]map[string]bool // page -> its anchors
}

func newChecker(root string) *checker {
	return &checker{root: root, md: goldmark.New(goldmark.WithExtensions(extension.GFM)), anchors: map[string]map[string]bool{}}
}

// link is a link of a page, with the line it is on.
type link struct {
	dest string
	line int
}

var (
	scheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	// The targets and ids of raw HTML: <a href="...">, <img src="...">, <a id="..."> (or name=).
	htmlLink = regexp.MustCompile(`\b(?:href|src)\s*=\s*"([^"]*)"`)
	htmlID   = regexp.MustCompile(`\b(?:id|name)\s*=\s*"([^"]*)"`)
)

// check reads page (relative to the root) and returns how many relative links it has
// and what is wrong with them, each as "page:line: link: problem".
func (c *checker) check(page string) (int, []string, error) {
	links, _, err := c.parse(page)
	if err != nil {
		return 0, nil, err
	}
	n := 0
	var problems []string
	for _, l := range links {
		if l.dest == "" || scheme.MatchString(l.dest) || strings.HasPrefix(l.dest, "//") {
			continue
		}
		n++
		if p := c.resolve(page, l.dest); p != "" {
			problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", page, l.line, l.dest, p))
		}
	}
	return n, problems, nil
}

// resolve says what is wrong with the relative link dest of page, or "".
func (c *checker) resolve(page, dest string) string {
	target, fragment, _ := strings.Cut(dest, "#")
	target, _, _ = strings.Cut(target, "?")
	target, err := url.PathUnescape(target)
	if err != nil {
		return "malformed: " + err.Error()
	}
	if fragment, err = url.PathUnescape(fragment); err != nil {
		return "malformed: " + err.Error()
	}
	file := page
	if target != "" {
		if strings.HasPrefix(target, "/") {
			// GitHub takes a path from the root of the repository.
			file = filepath.ToSlash(filepath.Clean(strings.TrimPrefix(target, "/")))
		} else {
			file = filepath.ToSlash(filepath.Join(filepath.Dir(page), target))
		}
		if file == ".." || strings.HasPrefix(file, "../") {
			return "outside the repository"
		}
		if _, err := os.Stat(filepath.Join(c.root, file)); err != nil {
			return "no such file"
		}
	}
	// Anchors are checked on Markdown pages; a code file's #L10 is GitHub's line.
	if fragment == "" || !strings.HasSuffix(file, ".md") {
		return ""
	}
	anchors, ok := c.anchors[file]
	if !ok {
		_, ids, err := c.parse(file)
		if err != nil {
			return err.Error()
		}
		anchors = ids
	}
	if !anchors[fragment] {
		return fmt.Sprintf("no heading of %s has the anchor %s", file, fragment)
	}
	return ""
}

// parse reads a Markdown page: its links and images (raw HTML's included) and the
// anchors of its headings (and of raw HTML ids).
func (c *checker) parse(page string) ([]link, map[string]bool, error) {
	src, err := os.ReadFile(filepath.Join(c.root, page))
	if err != nil {
		return nil, nil, err
	}
	doc := c.md.Parser().Parse(text.NewReader(src))
	line := func(offset int) int { return 1 + strings.Count(string(src[:offset]), "\n") }
	lineOf := func(n ast.Node) int {
		// An inline node's line is that of its first text; else its block's first line.
		offset := -1
		_ = ast.Walk(n, func(d ast.Node, entering bool) (ast.WalkStatus, error) {
			switch d := d.(type) {
			case *ast.Text:
				offset = d.Segment.Start
			case *ast.RawHTML:
				if d.Segments.Len() > 0 {
					offset = d.Segments.At(0).Start
				}
			}
			if offset >= 0 {
				return ast.WalkStop, nil
			}
			return ast.WalkContinue, nil
		})
		if offset >= 0 {
			return line(offset)
		}
		for ; n != nil; n = n.Parent() {
			if n.Type() == ast.TypeBlock && n.Lines().Len() > 0 {
				return line(n.Lines().At(0).Start)
			}
		}
		return 0
	}
	var links []link
	var headings []string
	ids := map[string]bool{}
	html := func(s string, line int) {
		for _, m := range htmlLink.FindAllStringSubmatch(s, -1) {
			links = append(links, link{dest: m[1], line: line})
		}
		for _, m := range htmlID.FindAllStringSubmatch(s, -1) {
			ids[m[1]] = true
		}
	}
	err = ast.Walk(doc, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.Heading:
			headings = append(headings, plainText(n, src))
		case *ast.Link:
			links = append(links, link{dest: string(n.Destination), line: lineOf(n)})
		case *ast.Image:
			links = append(links, link{dest: string(n.Destination), line: lineOf(n)})
		case *ast.RawHTML:
			var b strings.Builder
			for i := 0; i < n.Segments.Len(); i++ {
				seg := n.Segments.At(i)
				b.Write(seg.Value(src))
			}
			html(b.String(), lineOf(n))
		case *ast.HTMLBlock:
			var b strings.Builder
			for i := 0; i < n.Lines().Len(); i++ {
				seg := n.Lines().At(i)
				b.Write(seg.Value(src))
			}
			html(b.String(), lineOf(n))
		}
		return ast.WalkContinue, nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, a := range refdocs.Anchors(headings) {
		ids[a] = true
	}
	c.anchors[page] = ids
	return links, ids, nil
}

// plainText is the text of a heading as GitHub derives its anchor from it: the words of
// its text, code spans and links, without markup or raw HTML.
func plainText(n ast.Node, src []byte) string {
	var b strings.Builder
	_ = ast.Walk(n, func(n ast.Node, entering bool) (ast.WalkStatus, error) {
		if !entering {
			return ast.WalkContinue, nil
		}
		switch n := n.(type) {
		case *ast.Text:
			b.Write(n.Value(src))
		case *ast.String:
			b.Write(n.Value)
		case *ast.RawHTML:
			return ast.WalkSkipChildren, nil
		}
		return ast.WalkContinue, nil
	})
	return b.String()
}
