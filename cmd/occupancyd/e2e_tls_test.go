package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// writeCert issues a certificate signed by parent (self-signed when parent is nil) and
// writes cert and key as PEM files.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, typ string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".pem", "CERTIFICATE", der)
	write(name+".key", "EC PRIVATE KEY", kb)
	return cert, key
}

// The gateway reaches a Mosquitto over TLS with a client certificate, a CA of its own
// and username + password_file.
func TestE2ETLSClientCertAndPassword(t *testing.T) {
	bin, err := exec.LookPath("mosquitto")
	passwd, perr := exec.LookPath("mosquitto_passwd")
	if err != nil || perr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto / mosquitto_passwd not on PATH (required with CI=true)")
		}
		t.Skip("mosquitto not on PATH")
	}
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", true, nil, nil)
	writeCert(t, dir, "server", false, ca, caKey)
	writeCert(t, dir, "client", false, ca, caKey)
	pwFile := filepath.Join(dir, "mosquitto.passwd")
	if out, err := exec.Command(passwd, "-c", "-b", pwFile, "gateway", "s3cret").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "gateway.password"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := fmt.Sprintf(`listener %d 127.0.0.1
cafile %[2]s/ca.pem
certfile %[2]s/server.pem
keyfile %[2]s/server.key
require_certificate true
allow_anonymous false
password_file %[3]s
max_inflight_messages 1000
max_queued_messages 1000000
`, port, dir, pwFile)
	if u, err := user.Current(); err == nil {
		conf += "user " + u.Username + "\n" // root would drop to "mosquitto", who cannot read the temp dir
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	dumpOnFailure(t, "mosquitto", &logs)
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	cfg := e2eConfig{broker: fmt.Sprintf("ssl://127.0.0.1:%d", port), dir: filepath.Join(dir, "data")}
	y := cfg.yaml()
	y = replaceOnce(y, "  events_topic: dpu/+/events\n", fmt.Sprintf(`  events_topic: dpu/+/events
  username: gateway
  password_file: %q
  tls: {ca_file: %q, cert_file: %q, key_file: %q}
`, filepath.Join(dir, "gateway.password"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")))
	path := filepath.Join(dir, "occupancyd.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startMain(t, path)

	// A test publisher with the same credentials.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cc, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker(cfg.broker).SetClientID("pub-tls").
		SetUsername("gateway").SetPassword("s3cret").
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cc}})
	pub := paho.NewClient(o)
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	defer pub.Disconnect(50)
	now := time.Now().UnixMilli()
	evs := []e2eEvent{{"d1", "1", now, 1}, {"d1", "2", now + 1, 1}, {"d2", "1", now + 2, 1}}
	var msgs []e2eMessage
	for i, e := range evs {
		msgs = append(msgs, e2eMessage{topic: "dpu/" + e.DPU + "/events", payload: mustJSON(e.wire(i))})
	}
	publishAll(t, pub, msgs)
	want := e2eTopology().counts(evs)
	eventually(t, 10*time.Second, "events over TLS", func() string {
		return diffCounts(httpSpaces(t, d.httpAddr), want)
	})
}

// The embedded broker with mqtt.username + password_file: the gateway's own client
// and DPUs need them; anonymous clients are refused.
func TestE2EEmbeddedBrokerWithPassword(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "password")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	y := e2eConfig{dir: filepath.Join(dir, "data")}.yaml()
	y = replaceOnce(y, "  events_topic: dpu/+/events\n", fmt.Sprintf("  events_topic: dpu/+/events\n  username: dpus\n  password_file: %q\n", pw))
	path := filepath.Join(dir, "occupancyd.yaml")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startMain(t, path)
	anon := paho.NewClient(paho.NewClientOptions().AddBroker(d.brokerURL).SetClientID("anon").SetConnectTimeout(3 * time.Second))
	if tok := anon.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		anon.Disconnect(10)
		t.Fatal("anonymous client connected to an embedded broker with a user, want refused")
	}
	o := paho.NewClientOptions().AddBroker(d.brokerURL).SetClientID("dpu").SetUsername("dpus").SetPassword("hunter2")
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect with the password: %v", tok.Error())
	}
	defer c.Disconnect(10)
	e := e2eEvent{"d1", "1", time.Now().UnixMilli(), 1}
	publishAll(t, c, []e2eMessage{{topic: "dpu/d1/events", payload: mustJSON(e.wire(0))}})
	eventually(t, 10*time.Second, "event counted", func() string {
		return diffCounts(httpSpaces(t, d.httpAddr), e2eTopology().counts([]e2eEvent{e}))
	})
}

func replaceOnce(s, old, new string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + new + s[i+len(old):]
		}
	}
	panic("replaceOnce: " + old + " not found")
}
