package mqttconn

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/gorilla/websocket"
	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	mochipackets "github.com/mochi-mqtt/server/v2/packets"
)

// countingConn counts the reads and writes that reach the connection below.
type countingConn struct {
	net.Conn
	reads, writes atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func publishPacket(i int) packets.ControlPacket {
	p := packets.NewControlPacket(packets.Publish).(*packets.PublishPacket)
	p.Qos, p.MessageID = 1, uint16(i%65535+1)
	p.TopicName = fmt.Sprintf("dpu/d%d/events", i%50)
	p.Payload = []byte(fmt.Sprintf(`{"id":%d,"ts":%d,"direction":1}`, i, 1_700_000_000_000+i))
	return p
}

func puback(i int) []byte {
	p := packets.NewControlPacket(packets.Puback).(*packets.PubackPacket)
	p.MessageID = uint16(i%65535 + 1)
	var b bytes.Buffer
	_ = p.Write(&b)
	return b.Bytes()
}

// Reading packets the way paho does takes about three reads of the socket each
// unbuffered, and one per buffer-full through Conn; the packets are the same.
func TestReadBuffered(t *testing.T) {
	const n = 2000
	var stream bytes.Buffer
	for i := 0; i < n; i++ {
		if err := publishPacket(i).Write(&stream); err != nil {
			t.Fatal(err)
		}
	}
	read := func(t *testing.T, wrap bool) int64 {
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			_, _ = b.Write(stream.Bytes())
			b.Close()
		}()
		cc := &countingConn{Conn: a}
		var r io.Reader = cc
		if wrap {
			w := Wrap(cc, 0)
			defer w.Close()
			r = w
		}
		for i := 0; i < n; i++ {
			p, err := packets.ReadPacket(r)
			if err != nil {
				t.Fatalf("packet %d: %v", i, err)
			}
			pub, ok := p.(*packets.PublishPacket)
			want := publishPacket(i).(*packets.PublishPacket)
			if !ok || pub.TopicName != want.TopicName || !bytes.Equal(pub.Payload, want.Payload) || pub.MessageID != want.MessageID {
				t.Fatalf("packet %d: got %v, want %v", i, p, want)
			}
		}
		return cc.reads.Load()
	}
	raw := read(t, false)
	buffered := read(t, true)
	t.Logf("%d packets: %d reads unbuffered, %d through Conn", n, raw, buffered)
	if raw < 3*n {
		t.Errorf("got %d unbuffered reads, want at least %d (the premise of the buffer)", raw, 3*n)
	}
	if max := int64(stream.Len()/readBuffer + 10); buffered > max {
		t.Errorf("got %d reads through Conn, want at most %d", buffered, max)
	}
}

// Writes made while a send is on its way leave together, in order.
func TestWritesCoalesce(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	cc := &countingConn{Conn: a}
	w := Wrap(cc, 0)
	const n = 5000
	var want bytes.Buffer
	for i := 0; i < n; i++ {
		p := puback(i)
		want.Write(p)
		if m, err := w.Write(p); err != nil || m != len(p) {
			t.Fatalf("write %d: got %d, %v", i, m, err)
		}
	}
	// Nothing was read yet: net.Pipe holds the first send until the peer reads, and
	// every other Write waited in the buffer meanwhile.
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the bytes sent differ from the bytes written")
	}
	if err := w.Close(); err != nil { // the flusher has counted its last send
		t.Errorf("close: %v", err)
	}
	writes, sends := w.Stats()
	if writes != n || sends != cc.writes.Load() {
		t.Errorf("got stats %d writes, %d sends; want %d writes, %d sends", writes, sends, n, cc.writes.Load())
	}
	if sends > 3 {
		t.Errorf("got %d sends for %d writes made while the first was held, want at most 3", sends, n)
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Error("write after close: got no error")
	}
}

// An idle connection sends a write at once, without waiting for more.
func TestIdleWriteGoesOut(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := Wrap(a, 0)
	defer w.Close()
	for i := 0; i < 20; i++ {
		p := puback(i)
		start := time.Now()
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(p))
		if _, err := io.ReadFull(b, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Fatalf("got %x, want %x", got, p)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("write %d took %s to arrive", i, d)
		}
	}
}

// A peer that stops reading: Writes wait once maxPending bytes are queued, the send
// times out after the write timeout, the connection closes and Writes fail.
func TestStalledPeer(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	w := Wrap(a, 200*time.Millisecond)
	chunk := bytes.Repeat([]byte{0x40}, 1024)
	start := time.Now()
	var err error
	var written int
	for err == nil && time.Since(start) < 10*time.Second {
		var n int
		n, err = w.Write(chunk)
		written += n
	}
	if err == nil {
		t.Fatal("writes to a peer that never reads did not fail within 10s")
	}
	// One send in flight (at most what was pending) and maxPending more.
	if written > 2*maxPending+len(chunk) {
		t.Errorf("got %d bytes accepted, want at most 2 x maxPending (%d) + one write", written, 2*maxPending)
	}
	t.Logf("failed after %s, %d bytes accepted: %v", time.Since(start).Round(time.Millisecond), written, err)
	if _, rerr := b.Read(make([]byte, 1)); rerr == nil {
		// net.Pipe: the failed send closed our end, so the peer sees EOF
		t.Error("the connection stayed open after a failed send")
	}
	if err := w.Close(); err != nil {
		t.Errorf("close after a failed send: %v", err)
	}
}

// Close sends what is pending first; with a peer that does not read it gives up
// after closeFlush.
func TestClose(t *testing.T) {
	t.Run("flushes", func(t *testing.T) {
		a, b := net.Pipe()
		w := Wrap(a, 0)
		var want bytes.Buffer
		for i := 0; i < 100; i++ {
			want.Write(puback(i))
			if _, err := w.Write(puback(i)); err != nil {
				t.Fatal(err)
			}
		}
		got := make(chan []byte)
		go func() {
			all, _ := io.ReadAll(b)
			got <- all
		}()
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if g := <-got; !bytes.Equal(g, want.Bytes()) {
			t.Errorf("got %d bytes before EOF, want the %d written", len(g), want.Len())
		}
	})
	t.Run("bounded", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		w := Wrap(a, time.Minute)
		if _, err := w.Write([]byte("never read")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = w.Close()
		if d := time.Since(start); d > closeFlush+2*time.Second {
			t.Errorf("close took %s with a peer that does not read, want about %s", d, closeFlush)
		}
	})
}

// ---- paho through Open, against a real broker over tcp, tls and ws ----

// allowHook lets every client connect and use every topic.
type allowHook struct{ mochi.HookBase }

func (h *allowHook) ID() string { return "allow" }
func (h *allowHook) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}
func (h *allowHook) OnConnectAuthenticate(*mochi.Client, mochipackets.Packet) bool { return true }
func (h *allowHook) OnACLCheck(*mochi.Client, string, bool) bool                   { return true }

func startBroker(t *testing.T, ln net.Listener) {
	t.Helper()
	srv := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := srv.AddHook(new(allowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(listeners.NewNet("test", ln)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// wsBridge serves MQTT over websockets on an httptest server by relaying each
// websocket connection to the broker's TCP listener (messages in, bytes out as
// binary messages), as a websocket listener in front of a broker does.
func wsBridge(t *testing.T, brokerAddr string) string {
	up := websocket.Upgrader{Subprotocols: []string{"mqtt"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		tcp, err := net.Dial("tcp", brokerAddr)
		if err != nil {
			return
		}
		defer tcp.Close()
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := tcp.Read(buf)
				if n > 0 && ws.WriteMessage(websocket.BinaryMessage, buf[:n]) != nil {
					return
				}
				if err != nil {
					ws.Close()
					return
				}
			}
		}()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if _, err := tcp.Write(msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws://" + strings.TrimPrefix(srv.URL, "http://") + "/mqtt"
}

func TestPahoThroughOpen(t *testing.T) {
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startBroker(t, plainLn)
	cert, pool := selfSigned(t)
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	startBroker(t, tls.NewListener(tlsLn, &tls.Config{Certificates: []tls.Certificate{cert}}))

	for _, tc := range []struct {
		name, url, plain string // plain: the same broker without Open, for the other side
		tls              *tls.Config
	}{
		{"tcp", "tcp://" + plainLn.Addr().String(), "tcp://" + plainLn.Addr().String(), nil},
		{"tls", "ssl://" + tlsLn.Addr().String(), "ssl://" + tlsLn.Addr().String(), &tls.Config{RootCAs: pool}},
		{"ws", wsBridge(t, plainLn.Addr().String()), "tcp://" + plainLn.Addr().String(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) { roundTrip(t, tc.url, tc.plain, tc.tls) })
	}
}

// roundTrip: a client through Open receives QoS 1 messages with manual acks (the
// gateway's ingest) and publishes QoS 1 retained messages (its output); a plain paho
// client is the other side. Every message arrives once it is acknowledged.
func roundTrip(t *testing.T, brokerURL, plainURL string, tc *tls.Config) {
	const n = 1000
	id := fmt.Sprintf("wrapped-%s-%d", t.Name(), time.Now().UnixNano())
	id = strings.NewReplacer("/", "-").Replace(id)
	var mu sync.Mutex
	var conns []*Conn
	open := func(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
		c, err := Open(u, o)
		if err == nil {
			mu.Lock()
			conns = append(conns, c.(*Conn))
			mu.Unlock()
		}
		return c, err
	}
	got := make(chan string, 2*n)
	o := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(id).SetCleanSession(false).
		SetAutoAckDisabled(true).SetOrderMatters(false).SetCustomOpenConnectionFn(open).
		SetWriteTimeout(10 * time.Second).SetConnectTimeout(10 * time.Second)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	wrapped := paho.NewClient(o)
	if tok := wrapped.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect through Open: %v", tok.Error())
	}
	defer wrapped.Disconnect(250)
	if tok := wrapped.Subscribe("in/#", 1, func(_ paho.Client, m paho.Message) {
		got <- string(m.Payload())
		m.Ack()
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	po := paho.NewClientOptions().AddBroker(plainURL).SetClientID(id + "-plain").SetCleanSession(true)
	if tc != nil {
		po.SetTLSConfig(tc)
	}
	plain := paho.NewClient(po)
	if tok := plain.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect plain: %v", tok.Error())
	}
	defer plain.Disconnect(250)
	out := make(chan string, 2*n)
	if tok := plain.Subscribe("out/#", 1, func(_ paho.Client, m paho.Message) { out <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe plain: %v", tok.Error())
	}

	// In: the plain client publishes, the wrapped one receives and acknowledges.
	publishN(t, plain, n, "in", 7, false)
	expectAll(t, got, n, "received through Open")
	// Out: the wrapped client publishes retained QoS 1, the plain one receives.
	publishN(t, wrapped, n, "out", 11, true)
	expectAll(t, out, n, "published through Open")

	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Fatalf("got %d connections opened, want 1", len(conns))
	}
	w, s := conns[0].Stats()
	t.Logf("%s: %d writes in %d sends", t.Name(), w, s)
	if w < 2*n { // n PUBACKs and n PUBLISHes at least
		t.Errorf("got %d writes, want at least %d", w, 2*n)
	}
}

// publishN publishes 0..n-1 with QoS 1 on topics prefix/0..topics-1 and waits for
// every acknowledgement.
func publishN(t *testing.T, c paho.Client, n int, prefix string, topics int, retained bool) {
	t.Helper()
	toks := make([]paho.Token, 0, n)
	for i := 0; i < n; i++ {
		toks = append(toks, c.Publish(fmt.Sprintf("%s/%d", prefix, i%topics), 1, retained, fmt.Sprint(i)))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s %d: %v", prefix, i, tok.Error())
		}
	}
}

func expectAll(t *testing.T, ch <-chan string, n int, what string) {
	t.Helper()
	seen := make(map[string]bool, n)
	timeout := time.After(20 * time.Second)
	for len(seen) < n {
		select {
		case v := <-ch:
			seen[v] = true
		case <-timeout:
			t.Fatalf("%s: got %d distinct messages, want %d", what, len(seen), n)
		}
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprint(i)] {
			t.Fatalf("%s: message %d missing", what, i)
		}
	}
}

func TestOpenUnknownScheme(t *testing.T) {
	u, _ := url.Parse("gopher://127.0.0.1:1")
	if _, err := Open(u, *paho.NewClientOptions()); err == nil || !strings.Contains(err.Error(), `"gopher"`) {
		t.Errorf("got %v, want an error naming the scheme", err)
	}
}
