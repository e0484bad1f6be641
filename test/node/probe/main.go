// Command probe is the real-node tests' container. Static, standard library only, so
// its image is one file. Every mode but pause prints what it sees, then waits for SIGTERM:
//
//	probe pause                 the pods' sandbox
//	probe sysctls NAME...       NAME=VALUE for each sysctl, as the container's network namespace sees it
//	probe serve PORT            iflink=N (the host side of its eth0), then accepts connections and reads them
//	probe send HOST:PORT NAME...  the sysctls, then connects and writes a byte every 100 ms,
//	                            printing "connected", and "error: ..." when a write fails
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe pause | probe sysctls NAME...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
	case "sysctls":
		printSysctls(os.Args[2:])
	case "serve":
		iflink, err := os.ReadFile("/sys/class/net/eth0/iflink")
		if err != nil {
			fmt.Println("iflink error", err)
		}
		fmt.Printf("iflink=%s\n", strings.TrimSpace(string(iflink)))
		l, err := net.Listen("tcp", ":"+os.Args[2])
		if err != nil {
			fmt.Println("listen error:", err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, c) }()
			}
		}()
	case "send":
		printSysctls(os.Args[3:])
		var c net.Conn
		var err error
		for range 100 {
			if c, err = net.DialTimeout("tcp", os.Args[2], time.Second); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			fmt.Println("dial error:", err)
			os.Exit(1)
		}
		fmt.Println("connected")
		go func() {
			for {
				if _, err := c.Write([]byte{'x'}); err != nil {
					fmt.Println("error:", err)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	default:
		fmt.Fprintf(os.Stderr, "probe: unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

func printSysctls(names []string) {
	for _, name := range names {
		data, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
		if err != nil {
			fmt.Printf("%s error %v\n", name, err)
			continue
		}
		fmt.Printf("%s=%s\n", name, strings.TrimSpace(string(data)))
	}
}
