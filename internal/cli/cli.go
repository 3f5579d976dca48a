// Package cli is the small command framework of the ambit binary: nested
// subcommands, each with its own flags and a --help that says what it does.
// Used by cmd/ambit only.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Command is one verb. A command with Subcommands and no Run only dispatches.
type Command struct {
	Name string
	// Usage is the synopsis after the command path, e.g. "[flags] FILE...".
	Usage string
	// Short is one line for the parent's command list; Long is the help text.
	Short, Long string
	// Flags registers the command's flags.
	Flags       func(fs *flag.FlagSet)
	Run         func(ctx context.Context, args []string) error
	Subcommands []*Command
	// Hidden commands run as any other but are left out of their
	// parent's command list (helpers ambit runs itself).
	Hidden bool
}

// UsageError is a mistake in how the command was called: the message is
// printed with a hint to use --help, and the exit code is 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// Main runs the command tree on args (without the program name) and returns
// the process exit code.
func Main(ctx context.Context, root *Command, args []string, stdout, stderr io.Writer) int {
	path := []string{root.Name}
	cmd := root
	for {
		if len(cmd.Subcommands) == 0 || len(args) == 0 || strings.HasPrefix(args[0], "-") {
			break
		}
		sub := cmd.find(args[0])
		if sub == nil {
			if cmd.Run != nil {
				break
			}
			fmt.Fprintf(stderr, "%s: unknown command %q\nRun '%s --help' for the list of commands.\n", strings.Join(path, " "), args[0], strings.Join(path, " "))
			return 2
		}
		cmd, args, path = sub, args[1:], append(path, sub.Name)
	}
	fs := flag.NewFlagSet(strings.Join(path, " "), flag.ContinueOnError)
	fs.SetOutput(stderr)
	if cmd.Flags != nil {
		cmd.Flags(fs)
	}
	fs.Usage = func() { cmd.printHelp(stderr, path, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cmd.printHelp(stdout, path, fs)
			return 0
		}
		return 2 // flag already printed the problem and the usage
	}
	if cmd.Run == nil {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "%s: unknown command %q\n", strings.Join(path, " "), fs.Arg(0))
		}
		cmd.printHelp(stderr, path, fs)
		return 2
	}
	err := cmd.Run(ctx, fs.Args())
	if err == nil {
		return 0
	}
	var ue *UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", strings.Join(path, " "), ue.Msg, strings.Join(path, " "))
		return 2
	}
	fmt.Fprintf(stderr, "%s: %v\n", strings.Join(path, " "), err)
	return 1
}

func (c *Command) find(name string) *Command {
	for _, s := range c.Subcommands {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func (c *Command) printHelp(w io.Writer, path []string, fs *flag.FlagSet) {
	text := c.Long
	if text == "" {
		text = c.Short
	}
	fmt.Fprintf(w, "%s\n\nUsage:\n  %s", strings.TrimSpace(text), strings.Join(path, " "))
	if c.Usage != "" {
		fmt.Fprintf(w, " %s", c.Usage)
	} else if len(c.Subcommands) > 0 {
		fmt.Fprint(w, " COMMAND")
	}
	fmt.Fprintln(w)
	if len(c.Subcommands) > 0 {
		fmt.Fprintln(w, "\nCommands:")
		subs := append([]*Command(nil), c.Subcommands...)
		sort.Slice(subs, func(i, j int) bool { return subs[i].Name < subs[j].Name })
		for _, s := range subs {
			if !s.Hidden {
				fmt.Fprintf(w, "  %-14s %s\n", s.Name, s.Short)
			}
		}
	}
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	if len(c.Subcommands) > 0 {
		fmt.Fprintf(w, "\nRun '%s COMMAND --help' for more about a command.\n", strings.Join(path, " "))
	}
}

// StringList is a repeatable string flag.
type StringList []string

func (s *StringList) String() string     { return strings.Join(*s, ",") }
func (s *StringList) Set(v string) error { *s = append(*s, v); return nil }

// Stdout is where commands write their results; tests replace it.
var Stdout io.Writer = os.Stdout
