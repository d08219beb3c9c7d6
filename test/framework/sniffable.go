package framework

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// An application port that speaks HTTP and something else, as behind a port whose protocol
// nothing declares, where the sidecar sniffs each connection.

// heloLine starts SayHelo's raw TCP protocol: not HTTP, so Envoy's http_inspector finds
// nothing and the connection takes a TCP filter chain.
const heloLine = "HELO"

// ServeSniffable serves l until the test ends: HTTP/1.1 and cleartext HTTP/2 with prior
// knowledge, answering the server's name as the body and in the x-upstream header, and the
// protocol it was spoken to (HTTP/1.1, HTTP/2.0) in x-proto; and a connection whose first
// bytes are "HELO" gets "NAME-tcp" and a newline instead (see SayHelo).
func ServeSniffable(tb testing.TB, l net.Listener, name string) {
	tb.Helper()
	httpConns := &connListener{addr: l.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		ReadHeaderTimeout: RequestTimeout,
		Protocols:         &protocols,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("x-upstream", name)
			w.Header().Set("x-proto", r.Proto)
			_, _ = io.WriteString(w, name)
		}),
	}
	go func() { _ = srv.Serve(httpConns) }()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go dispatchSniffable(c, name, httpConns)
		}
	}()
	tb.Cleanup(func() {
		l.Close()
		httpConns.Close()
		srv.Close()
	})
}

// dispatchSniffable answers a HELO connection itself and hands any other to the HTTP server,
// with the bytes it peeked.
func dispatchSniffable(c net.Conn, name string, httpConns *connListener) {
	r := bufio.NewReader(c)
	_ = c.SetReadDeadline(time.Now().Add(RequestTimeout))
	first, err := r.Peek(len(heloLine))
	_ = c.SetReadDeadline(time.Time{})
	if err == nil && string(first) == heloLine {
		defer c.Close()
		_, _ = fmt.Fprintf(c, "%s-tcp\n", name)
		return
	}
	if !httpConns.offer(&peekedConn{Conn: c, r: r}) {
		c.Close()
	}
}

// SayHelo speaks ServeSniffable's raw TCP protocol on c, closes it, and returns the answer
// line ("NAME-tcp" from a ServeSniffable server).
func SayHelo(c net.Conn) (string, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(RequestTimeout))
	if _, err := fmt.Fprintf(c, "%s from a raw TCP client\n", heloLine); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("reading from %s: %w", c.RemoteAddr(), err)
	}
	return strings.TrimSpace(line), nil
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener is a net.Listener fed connections by dispatchSniffable.
type connListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *connListener) offer(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
