package main

import "syscall"

// statfsType is the type of the filesystem that holds path (statfs(2) f_type).
func statfsType(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Type), nil //nolint:unconvert // int32 on some architectures
}
