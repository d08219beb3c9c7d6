package framework

import "syscall"

// freeOnEveryAddress reports whether port can be bound on 0.0.0.0, that is, no socket holds
// it on any IPv4 address. The socket is bound and closed, never listening: nothing can
// connect to it.
func freeOnEveryAddress(port int) bool {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return true // cannot tell: keep the port, as before this check
	}
	defer syscall.Close(fd)
	// SO_REUSEADDR as Envoy's and Go's listeners set it: a connection of the past lingering
	// in TIME_WAIT does not make the port busy for them.
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	return syscall.Bind(fd, &syscall.SockaddrInet4{Port: port}) == nil
}
