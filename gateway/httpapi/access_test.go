package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestSession(t *testing.T) {
	a := newAccess("s3cret-token", false)
	post := func(body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		a.startSession(w, httptest.NewRequest(http.MethodPost, "/v1/session", strings.NewReader(body)))
		return w
	}
	read := func(hdr ...string) bool {
		r := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return a.canRead(r)
	}

	t.Run("right token", func(t *testing.T) {
		w := post(`{"token":"s3cret-token"}`)
		if w.Code != http.StatusNoContent {
			t.Fatalf("POST right token = %d %s, want 204", w.Code, w.Body)
		}
		cs := w.Result().Cookies()
		if len(cs) != 1 {
			t.Fatalf("cookies %v, want one", cs)
		}
		c := cs[0]
		if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge <= 0 {
			t.Errorf("cookie %+v, want %s HttpOnly SameSite=Strict Path=/ with a max age", c, SessionCookie)
		}
		if strings.Contains(c.Value, "s3cret") || strings.Contains(w.Header().Get("Set-Cookie"), "s3cret") {
			t.Errorf("the cookie carries the token: %q", w.Header().Get("Set-Cookie"))
		}
		if !read("Cookie", SessionCookie+"="+c.Value) {
			t.Error("a read with the session cookie is refused")
		}
		// The same token gives the same cookie (a restart keeps sessions); another
		// token does not accept it.
		if b := newAccess("s3cret-token", false); !b.cookie(cookieReq(c.Value)) {
			t.Error("the cookie does not survive a restart with the same token")
		}
		if b := newAccess("other-token", false); b.cookie(cookieReq(c.Value)) {
			t.Error("the cookie of one token opens another")
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		start := time.Now()
		w := post(`{"token":"guess"}`)
		if w.Code != http.StatusUnauthorized || len(w.Result().Cookies()) != 0 {
			t.Errorf("POST wrong token = %d with cookies %v, want 401 and none", w.Code, w.Result().Cookies())
		}
		if took := time.Since(start); took < failedLoginDelay {
			t.Errorf("a wrong token was answered in %v, want at least %v", took, failedLoginDelay)
		}
	})

	t.Run("form without script", func(t *testing.T) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/session", strings.NewReader("token=s3cret-token"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		a.startSession(w, r)
		if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" || len(w.Result().Cookies()) != 1 {
			t.Errorf("form POST = %d to %q with %v, want 303 to / with the cookie", w.Code, w.Header().Get("Location"), w.Result().Cookies())
		}
	})

	t.Run("bad bodies", func(t *testing.T) {
		for _, body := range []string{``, `{}`, `{"token": 5}`, `token=s3cret-token`, strings.Repeat("x", 5000)} {
			if w := post(body); w.Code != http.StatusBadRequest && w.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("POST %.20q = %d, want 400 or 413", body, w.Code)
			}
		}
	})

	t.Run("reads", func(t *testing.T) {
		for _, tc := range []struct {
			hdr  []string
			want bool
		}{
			{nil, false},
			{[]string{"Authorization", "Bearer s3cret-token"}, true},
			{[]string{"Authorization", "bearer s3cret-token"}, true},
			{[]string{"Authorization", "Bearer s3cret-toke"}, false},
			{[]string{"Authorization", "Basic s3cret-token"}, false},
			{[]string{"Cookie", SessionCookie + "=s3cret-token"}, false}, // the token is not the cookie
			{[]string{"Cookie", SessionCookie + "="}, false},
		} {
			if got := read(tc.hdr...); got != tc.want {
				t.Errorf("read with %v: %v, want %v", tc.hdr, got, tc.want)
			}
		}
	})

	t.Run("end", func(t *testing.T) {
		w := httptest.NewRecorder()
		a.endSession(w, httptest.NewRequest(http.MethodDelete, "/v1/session", nil))
		cs := w.Result().Cookies()
		if w.Code != http.StatusNoContent || len(cs) != 1 || cs[0].MaxAge >= 0 || cs[0].Value != "" {
			t.Errorf("DELETE /v1/session = %d %v, want 204 clearing the cookie", w.Code, cs)
		}
	})
}

func cookieReq(v string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: SessionCookie, Value: v})
	return r
}

func TestAccessOpen(t *testing.T) {
	r := httptest.NewRequest(http.MethodGet, "/v1/spaces", nil)
	if !newAccess("tok", true).canRead(r) {
		t.Error("open reads (loopback or http.open_reads) refuse a read without token")
	}
	if !newAccess("", false).canRead(r) {
		t.Error("with no token configured reads are refused")
	}
	w := httptest.NewRecorder()
	newAccess("", true).startSession(w, httptest.NewRequest(http.MethodPost, "/v1/session", strings.NewReader(`{"token":"x"}`)))
	if w.Code != http.StatusForbidden {
		t.Errorf("POST /v1/session with no token configured = %d, want 403", w.Code)
	}
}

// TestReadsNeedToken: on a non-loopback address with a token, reads need it (bearer
// or session cookie); the page, the probes and the session route do not; with
// http.open_reads, or on loopback, reads are open.
func TestReadsNeedToken(t *testing.T) {
	const token = "route-test-token"
	s := startServerWith(t, Options{Listen: "0.0.0.0:0", Token: token, Querier: newFakeQuerier()})
	base := "http://127.0.0.1:" + s.Addr()[strings.LastIndex(s.Addr(), ":")+1:]
	s.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("page")) })

	login := do(t, "POST", base+"/v1/session", "", `{"token":"`+token+`"}`)
	if login.status != http.StatusNoContent {
		t.Fatalf("POST /v1/session = %d %s", login.status, login.body)
	}
	cookie := login.header.Get("Set-Cookie")
	cookie = cookie[:strings.Index(cookie, ";")]

	for _, c := range []struct {
		path string
		open bool
	}{
		{"/v1/spaces", false}, {"/v1/spaces/hq", false}, {"/v1/dpus", false}, {"/v1/status", false},
		{"/v1/tree", false}, {"/v1/rejections", false}, {"/metrics", false}, {"/v1/spaces/hq/counts", false},
		{"/", true}, {"/healthz", true}, {"/readyz", true},
	} {
		for _, cred := range []struct {
			name, header, value string
			ok                  bool
		}{
			{"none", "", "", c.open},
			{"bearer", "Authorization", "Bearer " + token, true},
			{"wrong bearer", "Authorization", "Bearer nope", c.open},
			{"cookie", "Cookie", cookie, true},
			{"token as cookie", "Cookie", SessionCookie + "=" + token, c.open},
		} {
			req, _ := http.NewRequest("GET", base+c.path, nil)
			if cred.header != "" {
				req.Header.Set(cred.header, cred.value)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.StatusCode != http.StatusUnauthorized; got != cred.ok {
				t.Errorf("GET %s with %s: %d, want allowed=%v", c.path, cred.name, resp.StatusCode, cred.ok)
			}
		}
	}
	// Writes still need the bearer token: the cookie is not enough.
	req, _ := http.NewRequest("POST", base+"/v1/spaces/hq/reset", strings.NewReader(`{"occupancy":0}`))
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a reset with only the session cookie = %d, want 401", resp.StatusCode)
	}

	for name, o := range map[string]Options{
		"open_reads": {Listen: "0.0.0.0:0", Token: token, OpenReads: true},
		"loopback":   {Listen: "127.0.0.1:0", Token: token},
	} {
		o.Querier = newFakeQuerier()
		s := startServerWith(t, o)
		port := s.Addr()[strings.LastIndex(s.Addr(), ":")+1:]
		if r := do(t, "GET", "http://127.0.0.1:"+port+"/v1/spaces", "", ""); r.status != 200 {
			t.Errorf("%s: GET /v1/spaces without the token = %d, want 200", name, r.status)
		}
	}
}
