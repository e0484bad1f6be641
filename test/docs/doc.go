// Package docs tests the repository's Markdown as GitHub shows it: every relative link
// leads to a file of the repository, and every #anchor to a heading of its page.
package docs
