// Package mounts finds and removes the mounts kubox's components leave under
// a directory, deepest first.
package mounts

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Under lists mount points at or below dir, deepest first.
func Under(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	infos, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return !(i.Mountpoint == dir || strings.HasPrefix(i.Mountpoint, dir+"/")), false
	})
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	var points []string
	seen := map[string]bool{}
	for _, i := range infos {
		if !seen[i.Mountpoint] {
			seen[i.Mountpoint] = true
			points = append(points, i.Mountpoint)
		}
	}
	sort.Slice(points, func(a, b int) bool { return len(points[a]) > len(points[b]) })
	return points, nil
}

// UnmountUnder detaches every mount at or below dir and returns how many it
// removed. Stacked mounts on one point are all removed.
func UnmountUnder(dir string) (int, error) {
	var errs []error
	n := 0
	for pass := 0; pass < 4; pass++ {
		points, err := Under(dir)
		if err != nil {
			return n, err
		}
		if len(points) == 0 {
			return n, nil
		}
		errs = errs[:0]
		for _, p := range points {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
				continue
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}
