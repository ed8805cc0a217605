package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// lockedBuffer is a log sink the server's goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAccessMatrix (DESIGN 5 Access, issue 14 item 5): every combination of listen
// address (loopback or not), token (set or not) and http.open_reads, over real HTTP,
// for a read and a write route, with no credentials, the right bearer token, a wrong
// one and the status page's session cookie:
//   - a non-loopback address with no token and open_reads false is refused at New;
//   - reads are open on loopback or with open_reads; otherwise they need the bearer
//     token or the session cookie;
//   - writes need the bearer token (the cookie is not enough: 401), and with no token
//     configured they answer 403;
//   - the token appears in no log line (the request log at debug level included,
//     even when a client puts it in the query string).
func TestAccessMatrix(t *testing.T) {
	const token = "matrix-Secret-7f3a"
	var logs lockedBuffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel)
	for _, loopback := range []bool{true, false} {
		for _, withToken := range []bool{true, false} {
			for _, openReads := range []bool{false, true} {
				name := fmt.Sprintf("loopback=%v/token=%v/open_reads=%v", loopback, withToken, openReads)
				t.Run(name, func(t *testing.T) {
					o := Options{Listen: "127.0.0.1:0", OpenReads: openReads, Querier: newFakeQuerier(), Logger: log}
					if !loopback {
						o.Listen = "0.0.0.0:0"
					}
					if withToken {
						o.Token = token
					}
					if !loopback && !withToken && !openReads {
						if _, err := New(o); !errors.Is(err, ErrOpenHTTP) {
							t.Fatalf("New on a non-loopback address with no token: %v, want ErrOpenHTTP", err)
						}
						return
					}
					s := startServerWith(t, o)
					base := "http://127.0.0.1:" + s.Addr()[strings.LastIndex(s.Addr(), ":")+1:]
					cookie := ""
					if withToken {
						r := do(t, "POST", base+"/v1/session", "", `{"token":"`+token+`"}`)
						if r.status != http.StatusNoContent {
							t.Fatalf("POST /v1/session with the token = %d %s, want 204", r.status, r.body)
						}
						cookie = r.header.Get("Set-Cookie")
						cookie = cookie[:strings.Index(cookie, ";")]
					} else if r := do(t, "POST", base+"/v1/session", "", `{"token":"x"}`); r.status != http.StatusForbidden {
						t.Errorf("POST /v1/session with no token configured = %d, want 403", r.status)
					}
					readsOpen := loopback || openReads
					creds := []struct {
						name, header, value string
						read, write         int
					}{
						{"no credentials", "", "", 401, 401},
						{"bearer token", "Authorization", "Bearer " + token, 200, 200},
						{"wrong bearer token", "Authorization", "Bearer " + token + "x", 401, 401},
						{"session cookie", "Cookie", cookie, 200, 401},
					}
					for _, c := range creds {
						if c.name == "session cookie" && !withToken {
							continue // there is no session without a token
						}
						if readsOpen {
							c.read = 200
						}
						if !withToken {
							c.write = 403
						}
						for _, rq := range []struct {
							kind, method, path, body string
							want                     int
						}{
							{"read", "GET", "/v1/spaces?token=" + token, "", c.read},
							{"read", "GET", "/metrics", "", c.read},
							{"write", "POST", "/v1/spaces/hq/reset", `{"occupancy":0}`, c.write},
						} {
							req, err := http.NewRequest(rq.method, base+rq.path, strings.NewReader(rq.body))
							if err != nil {
								t.Fatal(err)
							}
							if c.header != "" {
								req.Header.Set(c.header, c.value)
							}
							resp, err := http.DefaultClient.Do(req)
							if err != nil {
								t.Fatal(err)
							}
							resp.Body.Close()
							if resp.StatusCode != rq.want {
								t.Errorf("%s %s %s with %s: got %d, want %d", rq.kind, rq.method, rq.path, c.name, resp.StatusCode, rq.want)
							}
						}
					}
					// The open routes answer without credentials whatever the rule.
					for _, p := range []string{"/healthz", "/readyz"} {
						if r := do(t, "GET", base+p, "", ""); r.status != 200 {
							t.Errorf("GET %s without credentials = %d, want 200", p, r.status)
						}
					}
				})
			}
		}
	}
	out := logs.String()
	if !strings.Contains(out, `"path":"/v1/spaces"`) {
		t.Fatalf("the request log was not captured (want debug lines):\n%.2000s", out)
	}
	if strings.Contains(out, token) {
		i := strings.Index(out, token)
		t.Errorf("the token is in the log: ...%s...", out[max(0, i-200):min(len(out), i+100)])
	}
}

func TestRedactQuery(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"start=2026-11-27T00:00:00Z&end=x":   "start=2026-11-27T00:00:00Z&end=x",
		"token=abc":                          "token=REDACTED",
		"space=a&access_token=abc&x=1":       "space=a&access_token=REDACTED&x=1",
		"Token=abc&PASSWORD=p&client_secret": "Token=REDACTED&PASSWORD=REDACTED&client_secret",
		"%74oken=abc":                        "%74oken=REDACTED",
	} {
		if got := redactQuery(in); got != want {
			t.Errorf("redactQuery(%q) = %q, want %q", in, got, want)
		}
	}
}
