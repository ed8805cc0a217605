package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serve(t *testing.T) *httptest.Server {
	t.Helper()
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	p.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

var assetRef = regexp.MustCompile(`(?:src|href)="(/ui/([a-z.]+)\?v=([0-9a-f]{16}))"`)

func TestPage(t *testing.T) {
	srv := serve(t)
	resp, body := get(t, srv.URL+"/")
	if resp.StatusCode != 200 {
		t.Fatalf("GET / = %d, want 200", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-cache",
		"Content-Security-Policy": csp,
		"X-Frame-Options":         "DENY",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("GET / %s: got %q, want %q", k, got, want)
		}
	}
	refs := assetRef.FindAllStringSubmatch(body, -1)
	seen := map[string]bool{}
	for _, r := range refs {
		seen[r[2]] = true
	}
	for _, name := range []string{"app.js", "app.css", "favicon.svg"} {
		if !seen[name] {
			t.Errorf("the page does not refer to %s with its hash: %v", name, refs)
		}
	}

	t.Run("assets", func(t *testing.T) {
		types := map[string]string{"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}
		for _, r := range refs {
			url, name, hash := r[1], r[2], r[3]
			resp, body := get(t, srv.URL+url)
			if resp.StatusCode != 200 || body == "" {
				t.Fatalf("GET %s = %d (%d bytes), want 200 with a body", url, resp.StatusCode, len(body))
			}
			if got := resp.Header.Get("Content-Type"); got != types[name] {
				t.Errorf("GET %s Content-Type: got %q, want %q", url, got, types[name])
			}
			if got := resp.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
				t.Errorf("GET %s (current hash) Cache-Control: got %q, want immutable", url, got)
			}
			resp, _ = get(t, srv.URL+"/ui/"+name+"?v=0000000000000000")
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("GET %s with an old hash: Cache-Control %q, want no-cache", name, got)
			}
			resp, body = get(t, srv.URL+url, "If-None-Match", `"`+hash+`"`)
			if resp.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("GET %s If-None-Match its hash = %d with %d bytes, want 304 and none", url, resp.StatusCode, len(body))
			}
		}
	})

	t.Run("unknown asset", func(t *testing.T) {
		resp, body := get(t, srv.URL+"/ui/nope.js")
		if resp.StatusCode != 404 || !strings.Contains(body, `"error"`) {
			t.Errorf("GET /ui/nope.js = %d %s, want 404 with a JSON error", resp.StatusCode, body)
		}
		resp, _ = get(t, srv.URL+"/ui/index.html")
		if resp.StatusCode != 404 {
			t.Errorf("GET /ui/index.html = %d, want 404 (the template is served at / only)", resp.StatusCode)
		}
	})
}

// TestAssetsKeepToTheCSP checks the rules the Content-Security-Policy and the
// no-innerHTML promise rely on: no inline script or style in the page, no inline event
// handlers, and no HTML parsing of strings in the script.
func TestAssetsKeepToTheCSP(t *testing.T) {
	p, err := New()
	if err != nil {
		t.Fatal(err)
	}
	page := string(p.index)
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`),             // a script with a body
		regexp.MustCompile(`<script(?:(?:\s(?:defer|type="[^"]*"))*)>`), // a script without src
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`https?://`), // no other origin (CDN)
	} {
		if m := bad.FindString(page); m != "" {
			t.Errorf("the page has %q (matched %s)", m, bad)
		}
	}
	js := string(p.files["app.js"].body)
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "http://", "https://"} {
		if strings.Contains(strings.ReplaceAll(js, "'http://www.w3.org/2000/svg'", ""), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	css := string(p.files["app.css"].body)
	if strings.Contains(css, "@import") || strings.Contains(css, "url(http") {
		t.Error("app.css loads from another origin")
	}
}
