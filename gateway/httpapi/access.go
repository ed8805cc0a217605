package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Access (DESIGN 5): write routes need http.token (Authorization: Bearer); with no
// token configured they answer 403. Reads are open where the listen address is
// loopback or http.open_reads is set; elsewhere they need the token too, as a bearer
// token or as the session cookie the status page gets from POST /v1/session — so the
// token never has to appear in a URL, and a browser asks for it once.
//
// The cookie does not hold the token: it holds an HMAC of a fixed label keyed with
// the token, so it is the same across restarts (no session store), stops working when
// the token changes, and gives the token away to nobody who reads it.

// SessionCookie is the status page's session cookie.
const SessionCookie = "occupancyd_session"

// sessionMaxAge is how long a browser keeps the session (it is asked for the token
// again after that, or after the token changed).
const sessionMaxAge = 30 * 24 * time.Hour

const maxSessionBody = 4 << 10

// failedLoginDelay slows guessing: wrong tokens are answered one at a time, each
// after this long.
const failedLoginDelay = 250 * time.Millisecond

type access struct {
	hasToken  bool
	tokenHash [sha256.Size]byte
	session   string // the cookie value for the token
	openReads bool

	failMu sync.Mutex // wrong tokens are answered one at a time
}

func newAccess(token string, openReads bool) *access {
	a := &access{openReads: openReads || token == ""}
	if token != "" {
		a.hasToken = true
		a.tokenHash = sha256.Sum256([]byte(token))
		m := hmac.New(sha256.New, []byte(token))
		m.Write([]byte("occupancyd status page session v1"))
		a.session = hex.EncodeToString(m.Sum(nil))
	}
	return a
}

// tokenOK compares a presented token with http.token in constant time (over hashes,
// so neither content nor length leaks through timing).
func (a *access) tokenOK(tok string) bool {
	got := sha256.Sum256([]byte(tok))
	return a.hasToken && subtle.ConstantTimeCompare(got[:], a.tokenHash[:]) == 1
}

// bearer reports whether the request carries Authorization: Bearer <http.token>.
func (a *access) bearer(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) < len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return false
	}
	return a.tokenOK(strings.TrimSpace(h[len(prefix):]))
}

// cookie reports whether the request carries the session cookie.
func (a *access) cookie(r *http.Request) bool {
	if !a.hasToken {
		return false
	}
	c, err := r.Cookie(SessionCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(a.session)) == 1
}

// canRead reports whether the request may read.
func (a *access) canRead(r *http.Request) bool {
	return a.openReads || a.bearer(r) || a.cookie(r)
}

// openRoute reports whether a route answers without a token whatever the access
// rule: the page itself (it holds no data and asks for the token), probes, the
// API's description, and the session route that takes the token.
func openRoute(method, path string) bool {
	switch {
	case path == "/" || strings.HasPrefix(path, "/ui/"):
		return true
	case path == "/healthz" || path == "/readyz" || path == "/v1/openapi.json":
		return true
	case path == "/v1/session":
		return true
	}
	return false
}

// startSession answers POST /v1/session {"token": "..."}: 204 with the session
// cookie for the right token, 401 for a wrong one, 403 with no token configured. The
// page's form posted without its script (token=... form-encoded) gets the cookie and
// a redirect to the page.
func (a *access) startSession(w http.ResponseWriter, r *http.Request) {
	if !a.hasToken {
		WriteError(w, http.StatusForbidden, "no token is configured (http.token): reads are open and there is no session to start")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSessionBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			WriteError(w, http.StatusRequestEntityTooLarge, "body over 4096 bytes")
			return
		}
		WriteError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	var in struct {
		Token string `json:"token"`
	}
	form := strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
	if form {
		v, err := url.ParseQuery(string(body))
		if err == nil {
			in.Token = v.Get("token")
		}
	} else if err := json.Unmarshal(body, &in); err != nil {
		in.Token = ""
	}
	if in.Token == "" {
		WriteError(w, http.StatusBadRequest, `body must be JSON {"token": "<http.token>"}`)
		return
	}
	if !a.tokenOK(in.Token) {
		a.failMu.Lock()
		time.Sleep(failedLoginDelay)
		a.failMu.Unlock()
		WriteError(w, http.StatusUnauthorized, "wrong token")
		return
	}
	http.SetCookie(w, a.sessionCookie(r, a.session, int(sessionMaxAge.Seconds())))
	w.Header().Set("Cache-Control", "no-store")
	if form {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// endSession answers DELETE /v1/session: the cookie is cleared.
func (a *access) endSession(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, a.sessionCookie(r, "", -1))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (a *access) sessionCookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     SessionCookie,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   r.TLS != nil,
	}
}
