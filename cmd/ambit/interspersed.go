package main

import (
	"flag"
	"io"
)

// localFlags registers a command's flags and remembers the set cli.Main
// parsed them with, so that Run can parse more flags after positional
// arguments (see interspersed).
type localFlags struct {
	register func(fs *flag.FlagSet)
	parsed   *flag.FlagSet
}

func (l *localFlags) Flags(fs *flag.FlagSet) { l.parsed = fs; l.register(fs) }

// interspersed parses flags that follow positional arguments (as in
// 'ambit get pods -A -o wide'), stopping at "--": it returns the positional
// arguments and what follows "--" (nil when there is no "--"). Flags given
// before the first positional argument keep their values.
func (l *localFlags) interspersed(args []string) (positional, rest []string, err error) {
	saved := map[string]string{}
	if l.parsed != nil {
		l.parsed.Visit(func(f *flag.Flag) { saved[f.Name] = f.Value.String() })
	}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l.register(fs) // resets the variables to their defaults
	for k, v := range saved {
		fs.Set(k, v)
	}
	for len(args) > 0 {
		if args[0] == "--" {
			return positional, append([]string{}, args[1:]...), nil
		}
		if len(args[0]) > 1 && args[0][0] == '-' {
			// Parse up to the next positional argument or "--".
			end := len(args)
			for i, a := range args {
				if a == "--" {
					end = i
					break
				}
			}
			if err := fs.Parse(args[:end]); err != nil {
				return nil, nil, err
			}
			args = append(fs.Args(), args[end:]...)
			if len(fs.Args()) == 0 {
				continue
			}
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	return positional, nil, nil
}
