// Package ui is the status page of DESIGN 5a: one HTML page, its script, its style
// sheet and its icon, embedded in the binary. No CDN, no build step: the page is
// html/template and plain JavaScript, and it works on an edge box with no network
// beyond the gateway.
//
// The page holds no data of its own. It reads the HTTP API (/v1/status, /v1/tree,
// /v1/spaces/{id}/counts, /v1/dpus, /v1/rejections) and the live stream /v1/stream,
// and where reads need the token it asks for it once and posts it to /v1/session,
// which keeps it in an HttpOnly cookie. So serving the page itself needs no token,
// and the HTML carries nothing but asset names.
//
// Assets are served under /ui/ with a content hash in their URL (?v=), so a browser
// keeps them until the binary changes; the page itself is never cached.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// csp allows the page its own script, style sheet and API and nothing else: no inline
// script, no other origin, no framing.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// contentTypes are fixed here rather than taken from the system's MIME tables, which
// differ between machines.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Page serves the status page and its assets.
type Page struct {
	index []byte
	files map[string]asset
}

type asset struct {
	body  []byte
	ctype string
	hash  string // first 16 hex digits of the SHA-256 of body
}

// New reads the embedded assets and renders the page once.
func New() (*Page, error) {
	p := &Page{files: map[string]asset{}}
	err := fs.WalkDir(assets, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("%s: no content type for its extension", name)
		}
		p.files[strings.TrimPrefix(name, "assets/")] = asset{body: b, ctype: ct, hash: hex.EncodeToString(sum[:8])}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ui: read assets: %w", err)
	}
	tpl, err := template.New("index.html").Funcs(template.FuncMap{
		"asset": p.assetURL,
	}).ParseFS(assets, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("ui: parse page: %w", err)
	}
	var buf bytes.Buffer
	if err := tpl.Execute(&buf, nil); err != nil {
		return nil, fmt.Errorf("ui: render page: %w", err)
	}
	p.index = buf.Bytes()
	delete(p.files, "index.html") // served at / only
	return p, nil
}

// assetURL is the template's {{asset "app.js"}}: the URL with the content hash.
func (p *Page) assetURL(name string) (string, error) {
	a, ok := p.files[name]
	if !ok {
		return "", fmt.Errorf("ui: no asset %q", name)
	}
	return "/ui/" + name + "?v=" + a.hash, nil
}

// Mux is where the page registers its routes (*http.ServeMux, *httpapi.Server).
type Mux interface {
	HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request))
}

// Register adds GET / (the page) and GET /ui/{file} (its assets) to mux.
func (p *Page) Register(mux Mux) {
	mux.HandleFunc("GET /{$}", p.ServeIndex)
	mux.HandleFunc("GET /ui/{file}", p.ServeAsset)
}

// ServeIndex answers the page.
func (p *Page) ServeIndex(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	securityHeaders(h)
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(p.index)
}

// ServeAsset answers /ui/{file}. With the current hash in ?v= the answer may be kept
// for a year (the URL changes with the content); otherwise it is revalidated by ETag.
func (p *Page) ServeAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := p.files[r.PathValue("file")]
	h := w.Header()
	securityHeaders(h)
	if !ok {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprintf(w, "{\"error\":%q}\n", "no asset "+r.PathValue("file"))
		return
	}
	etag := `"` + a.hash + `"`
	h.Set("ETag", etag)
	if r.URL.Query().Get("v") == a.hash {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" && strings.Contains(inm, etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", a.ctype)
	_, _ = w.Write(a.body)
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}
