//go:build !linux

package main

import "errors"

// statfsType fails: sysctls are Linux's, and ha-sysctl runs only there.
func statfsType(string) (int64, error) {
	return 0, errors.New("ha-sysctl runs on Linux only")
}
