//go:build !linux

package kube

// processAlive always reports true off Linux, so stale folders are never
// removed there: better a leftover folder than a live cluster's removed.
func processAlive(int) bool { return true }
