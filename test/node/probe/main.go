// Command probe is the real-node tests' container: `probe pause` is the pods' sandbox
// (it waits for SIGTERM), `probe sysctls NAME...` prints NAME=VALUE for each sysctl as
// the container's network namespace sees it, then waits for SIGTERM. Static, standard
// library only, so its image is one file.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe pause | probe sysctls NAME...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
	case "sysctls":
		for _, name := range os.Args[2:] {
			data, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
			if err != nil {
				fmt.Printf("%s error %v\n", name, err)
				continue
			}
			fmt.Printf("%s=%s\n", name, strings.TrimSpace(string(data)))
		}
	default:
		fmt.Fprintf(os.Stderr, "probe: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
