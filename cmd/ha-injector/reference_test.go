package main

import (
	"testing"

	"github.com/ha-injector/ha-injector/test/harness/refdocs"
)

// TestReferenceCLI keeps docs/reference/cli.md equal to the command tree: every
// command, its usage, examples and flags with their types and defaults. `make generate`
// refreshes it.
func TestReferenceCLI(t *testing.T) {
	// Defaults that name the binary's own version (the sysctl image) are written with
	// the placeholder the docs use, not this test binary's "dev".
	stamped := version
	version = "<version>"
	t.Cleanup(func() { version = stamped })
	root := newRootCommand(nil)
	// What cobra adds when the command runs.
	root.InitDefaultVersionFlag()
	root.InitDefaultCompletionCmd()
	refdocs.Check(t, "docs/reference/cli.md", refdocs.CLIPage(root, "the cobra command tree of `cmd/ha-injector`"))
}
