package main

import (
	"flag"
	"strings"
	"testing"
)

func TestInterspersed(t *testing.T) {
	var name, ns string
	var all bool
	lf := &localFlags{register: func(fs *flag.FlagSet) {
		fs.StringVar(&name, "name", "ambit", "")
		fs.StringVar(&ns, "n", "", "")
		fs.BoolVar(&all, "A", false, "")
	}}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	lf.Flags(fs)
	if err := fs.Parse([]string{"--name", "qs", "pods", "-A", "-n", "demo", "more", "--", "cmd", "-x"}); err != nil {
		t.Fatal(err)
	}
	pos, rest, err := lf.interspersed(fs.Args())
	if err != nil {
		t.Fatal(err)
	}
	if name != "qs" || ns != "demo" || !all || strings.Join(pos, " ") != "pods more" || strings.Join(rest, " ") != "cmd -x" {
		t.Errorf("name %q ns %q all %v pos %q rest %q", name, ns, all, pos, rest)
	}
}
