//go:build !linux

package framework

// freeOnEveryAddress cannot tell outside Linux, where the harness's network tests run.
func freeOnEveryAddress(int) bool { return true }
