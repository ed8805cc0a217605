// Package mqttconn opens the network connection under a paho MQTT client and wraps
// it: reads go through a buffer, and small writes are coalesced.
//
// paho reads a packet with one read for its type byte, one per byte of its length
// and one for the rest, and writes every packet, each PUBACK included, with a write
// of its own: about three read and one write system calls per event received. Open
// (a paho.OpenConnectionFunc) dials what paho's own dialer dials (tcp, ssl/tls, ws,
// wss, unix) and returns a Conn whose reads come from a 64 KiB buffer and whose
// writes are handed to a flusher goroutine: it writes at once what is waiting when
// it wakes, and whatever is written while one write is on its way goes out
// together in the next; while busy (a send moments ago) the flusher first yields
// to the writers a few times, as long as they keep adding. Nothing waits on a
// timer, so an idle connection sends a PUBACK as soon as the flusher runs, and a
// busy one sends hundreds per system call.
package mqttconn

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/proxy"
)

const (
	// readBuffer is the read buffer of a connection.
	readBuffer = 64 << 10
	// maxPending bounds the bytes written and not yet sent; past it Write waits for
	// the flusher, as an unbuffered Write waits for the socket.
	maxPending = 256 << 10
	// closeFlush bounds how long Close tries to send what is still pending (a
	// DISCONNECT, the last PUBACKs) before it closes the socket.
	closeFlush = time.Second
	// A send within busyWithin of the previous one first yields to the writers up
	// to busyYields times while they keep adding (a few microseconds each).
	busyWithin = 2 * time.Millisecond
	busyYields = 3
)

// Open dials uri as paho would and wraps the connection (see Conn). It is a
// paho.OpenConnectionFunc: ClientOptions.SetCustomOpenConnectionFn(mqttconn.Open).
func Open(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	c, err := dial(uri, o)
	if err != nil {
		return nil, err
	}
	return Wrap(c, o.WriteTimeout), nil
}

// dial opens the network connection for the schemes paho's built-in dialer knows,
// the same way (proxies from the environment included).
func dial(uri *url.URL, o paho.ClientOptions) (net.Conn, error) {
	dialer := o.Dialer
	if dialer == nil {
		dialer = &net.Dialer{Timeout: 30 * time.Second}
	}
	switch uri.Scheme {
	case "ws", "wss":
		u := *uri
		u.User = nil // the websocket dialer refuses a URL with user info
		var tc *tls.Config
		if uri.Scheme == "wss" {
			tc = o.TLSConfig
		}
		return paho.NewWebsocket(u.String(), tc, o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	case "mqtt", "tcp":
		return proxy.FromEnvironmentUsing(dialer).Dial("tcp", uri.Host)
	case "unix":
		if uri.Host != "" {
			return dialer.Dial("unix", uri.Host)
		}
		return dialer.Dial("unix", uri.Path)
	case "ssl", "tls", "mqtts", "mqtt+ssl", "tcps":
		if os.Getenv("all_proxy") == "" {
			return tls.DialWithDialer(dialer, "tcp", uri.Host, o.TLSConfig)
		}
		c, err := proxy.FromEnvironment().Dial("tcp", uri.Host)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(c, o.TLSConfig)
		if err := tc.Handshake(); err != nil {
			_ = c.Close()
			return nil, err
		}
		return tc, nil
	}
	return nil, fmt.Errorf("mqtt: unknown scheme %q in broker URL", uri.Scheme)
}

// Conn is a network connection with a read buffer and coalesced writes.
//
// Write copies into a pending buffer and returns; a flusher goroutine sends it.
// A failed or timed-out send (writeTimeout, per send) closes the connection, so
// paho's reader fails and the client reconnects; later Writes return the error.
// SetWriteDeadline is ignored: paho sets it around each of its writes, which no
// longer touch the socket; the flusher sets its own per send.
type Conn struct {
	net.Conn
	r            *bufio.Reader
	writeTimeout time.Duration

	mu      sync.Mutex
	space   *sync.Cond // signalled when the flusher took the pending bytes or failed
	pending []byte
	spare   []byte
	err     error // sticky: the first failed send, or net.ErrClosed after Close

	wake      chan struct{} // capacity 1: there are pending bytes
	stop      chan struct{} // closed by Close: send what is pending, then exit
	stopped   chan struct{} // closed by the flusher when it exits
	closeOnce sync.Once
	closeErr  error

	writes, sends atomic.Int64
}

// Wrap wraps c; writeTimeout bounds each send (0: none).
func Wrap(c net.Conn, writeTimeout time.Duration) *Conn {
	w := &Conn{
		Conn:         c,
		r:            bufio.NewReaderSize(c, readBuffer),
		writeTimeout: writeTimeout,
		wake:         make(chan struct{}, 1),
		stop:         make(chan struct{}),
		stopped:      make(chan struct{}),
	}
	w.space = sync.NewCond(&w.mu)
	go w.flusher()
	return w
}

// Read reads through the buffer.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write queues p for the flusher. It waits only while maxPending bytes are queued.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.pending) >= maxPending {
		c.space.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	c.mu.Unlock()
	c.writes.Add(1)
	select {
	case c.wake <- struct{}{}:
	default: // already signalled
	}
	return len(p), nil
}

// SetDeadline sets the read deadline; see Conn for writes.
func (c *Conn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// SetWriteDeadline is ignored; see Conn.
func (c *Conn) SetWriteDeadline(time.Time) error { return nil }

// Stats returns the Writes made and the sends (system calls, for a TCP socket)
// they took.
func (c *Conn) Stats() (writes, sends int64) { return c.writes.Load(), c.sends.Load() }

func (c *Conn) flusher() {
	defer close(c.stopped)
	var lastSend time.Time
	for {
		stopping := false
		select {
		case <-c.wake:
		case <-c.stop:
			stopping = true
		}
		// Busy (the last send was moments ago): let the writers run a little
		// before taking what is pending, so that a burst of PUBACKs or publishes
		// leaves in few sends. Idle, a write goes out at once.
		if !stopping && time.Since(lastSend) < busyWithin {
			for i := 0; i < busyYields; i++ {
				c.mu.Lock()
				n := len(c.pending)
				c.mu.Unlock()
				runtime.Gosched()
				c.mu.Lock()
				grew := len(c.pending) > n
				c.mu.Unlock()
				if !grew {
					break
				}
			}
		}
		c.mu.Lock()
		out := c.pending
		c.pending = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()
		if len(out) == 0 {
			if stopping {
				return
			}
			continue
		}
		if c.writeTimeout > 0 {
			_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		}
		_, err := c.Conn.Write(out)
		lastSend = time.Now()
		c.sends.Add(1)
		c.mu.Lock()
		if cap(out) <= 4*maxPending {
			c.spare = out[:0]
		}
		if err != nil && c.err == nil {
			c.err = err
		}
		c.space.Broadcast()
		c.mu.Unlock()
		if err != nil {
			_ = c.Conn.Close() // paho's reader fails: connection lost, reconnect
			return
		}
	}
}

// Close sends what is pending (for at most closeFlush), then closes the connection.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.stop)
		select {
		case <-c.stopped:
		case <-time.After(closeFlush): // the peer does not read: give up on the rest
		}
		c.closeErr = c.Conn.Close()
		<-c.stopped // a send in progress fails now
		c.mu.Lock()
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.space.Broadcast()
		c.mu.Unlock()
		if errors.Is(c.closeErr, net.ErrClosed) {
			c.closeErr = nil // the flusher closed it after a failed send
		}
	})
	return c.closeErr
}
