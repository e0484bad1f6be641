package refdocs

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// CLIPage is the reference page of a cobra command tree (source names where it is built):
// for every command that is not hidden, what it does, how it is called, its examples and
// a table of its flags (name, type, default, usage), as `--help` prints them. The --help
// flag every command has is left out. cobra adds the completion command and the root's
// --version flag when the command runs: call InitDefaultCompletionCmd and
// InitDefaultVersionFlag first to have them listed.
func CLIPage(root *cobra.Command, source string) []byte {
	var b strings.Builder
	header(&b, root.Name()+" command line",
		fmt.Sprintf("Every command of `%s` and its flags: what `%s <command> --help` prints, in one page.", root.Name(), root.Name()),
		source)
	b.WriteString("\nCommands:\n\n")
	var all []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		all = append(all, c)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	for _, c := range all {
		fmt.Fprintf(&b, "%s- [`%s`](#%s): %s\n", strings.Repeat("  ", depth(c)), c.CommandPath(), Anchor(c.CommandPath()), prose(c.Short))
	}
	for _, c := range all {
		command(&b, c)
	}
	return []byte(b.String())
}

func depth(c *cobra.Command) int {
	d := 0
	for p := c.Parent(); p != nil; p = p.Parent() {
		d++
	}
	return d
}

func command(b *strings.Builder, c *cobra.Command) {
	fmt.Fprintf(b, "\n## `%s`\n\n", c.CommandPath())
	text := c.Long
	if text == "" {
		text = c.Short
	}
	fmt.Fprintf(b, "```text\n%s\n```\n", strings.TrimRight(text, "\n"))
	fmt.Fprintf(b, "\nUsage:\n\n```sh\n%s\n", c.UseLine())
	if c.HasAvailableSubCommands() {
		fmt.Fprintf(b, "%s [command]\n", c.CommandPath())
	}
	b.WriteString("```\n")
	if c.Example != "" {
		fmt.Fprintf(b, "\nExamples:\n\n```sh\n%s\n```\n", strings.TrimRight(c.Example, "\n"))
	}
	if c.HasAvailableSubCommands() {
		b.WriteString("\nCommands:\n\n")
		for _, sub := range c.Commands() {
			if sub.IsAvailableCommand() && sub.Name() != "help" {
				fmt.Fprintf(b, "- [`%s`](#%s): %s\n", sub.CommandPath(), Anchor(sub.CommandPath()), prose(sub.Short))
			}
		}
	}
	flags := flagRows(c.NonInheritedFlags())
	inherited := flagRows(c.InheritedFlags())
	if len(flags) == 0 && len(inherited) == 0 {
		b.WriteString("\nNo flags but `--help`.\n")
		return
	}
	if len(flags) > 0 {
		b.WriteString("\nFlags:\n\n| flag | type | default | what it does |\n| --- | --- | --- | --- |\n")
		b.WriteString(strings.Join(flags, ""))
	}
	if len(inherited) > 0 {
		b.WriteString("\nFlags of the parent commands:\n\n| flag | type | default | what it does |\n| --- | --- | --- | --- |\n")
		b.WriteString(strings.Join(inherited, ""))
	}
}

// flagRows are the table rows of fs's flags, --help and hidden ones left out, sorted by
// name as --help prints them.
func flagRows(fs *pflag.FlagSet) []string {
	var rows []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == "help" {
			return
		}
		name := "--" + f.Name
		if f.Shorthand != "" && f.ShorthandDeprecated == "" {
			name = "-" + f.Shorthand + ", " + name
		}
		// The type as --help names it: the back-quoted word of the usage, else the
		// value's type (none for a boolean flag, which takes no value).
		typ, usage := pflag.UnquoteUsage(f)
		if typ == "" {
			typ = f.Value.Type()
		}
		def := ""
		if f.DefValue != "" {
			def = code(f.DefValue, true)
		}
		if f.Deprecated != "" {
			usage += " (deprecated: " + f.Deprecated + ")"
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s |\n", code(name, true), code(typ, true), def, cell(usage)))
	})
	return rows
}
