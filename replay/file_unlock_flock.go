//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package replay

import (
	"os"
	"syscall"
)

// unlockFile releases bbolt's flock on a file whose open failed half way.
// Closing the descriptor is not enough: bbolt's mapping of the file keeps
// the open file, and so the lock, alive.
func unlockFile(f *os.File) {
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
