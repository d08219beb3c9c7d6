package framework

import "syscall"

// sysProcAttr makes the kernel kill the child when the thread that started it
// exits; see startProcess.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
