//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package replay

import "os"

// unlockFile is a no-op where bbolt does not lock with flock.
func unlockFile(*os.File) {}
