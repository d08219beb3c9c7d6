//go:build !linux

package framework

import "syscall"

// sysProcAttr has nothing to add where Pdeathsig does not exist: children
// are only stopped by the test's cleanups there.
func sysProcAttr() *syscall.SysProcAttr { return nil }
