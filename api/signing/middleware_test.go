package signing_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/api/signing"
)

// problemFor is a stand-in for the API's single error handler: it maps the
// sentinels to problem types.
func problemFor(err error) (int, string) {
	switch {
	case errors.Is(err, signing.ErrMissingHeaders):
		return http.StatusUnauthorized, "missing-credentials"
	case errors.Is(err, signing.ErrMalformedHeader):
		return http.StatusBadRequest, "malformed-credentials"
	case errors.Is(err, signing.ErrUnknownApp):
		return http.StatusUnauthorized, "unknown-app"
	case errors.Is(err, signing.ErrStaleTimestamp):
		return http.StatusUnauthorized, "stale-timestamp"
	case errors.Is(err, signing.ErrReplayedNonce):
		return http.StatusUnauthorized, "replayed-nonce"
	case errors.Is(err, signing.ErrBadSignature):
		return http.StatusUnauthorized, "bad-signature"
	case errors.Is(err, signing.ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "payload-too-large"
	}
	return http.StatusInternalServerError, "internal"
}

type echoed struct {
	AppID     string `json:"app_id"`
	HasSecret bool   `json:"has_secret"`
	Body      string `json:"body"`
	Path      string `json:"path"`
}

// server starts a real Echo on a free port: /v1/* with the default body
// limit (1 KiB here), /batch with 4 KiB.
func server(t *testing.T) (*httptest.Server, *fakeClock) {
	t.Helper()
	clock := newFakeClock(time.Unix(katTimestamp, 0))
	v := newVerifier(t, signing.Config{
		Apps:    testApps(),
		Nonces:  signing.NewMemoryNonces(clock.Now),
		MaxBody: 1024,
		Now:     clock.Now,
	})
	e := echo.New()
	e.HideBanner = true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		status, slug := problemFor(err)
		c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
		_ = c.JSONBlob(status, []byte(`{"type":"https://pushledger.dev/problems/`+slug+`","status":`+jsonInt(status)+`}`))
	}
	handler := func(c echo.Context) error {
		creds, ok := signing.FromContext(c)
		if !ok {
			return errors.New("no credentials in context")
		}
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, echoed{AppID: creds.AppID, HasSecret: creds.Secret != nil, Body: string(body), Path: c.Request().URL.EscapedPath()})
	}
	e.Group("/v1", v.Middleware()).Any("/*", handler)
	e.POST("/batch", handler, v.MiddlewareMaxBody(4096))
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv, clock
}

func jsonInt(n int) string { b, _ := json.Marshal(n); return string(b) }

type call struct {
	method, target string
	appKey         string
	secret         string
	at             time.Time
	nonce          string
	body           string
	chunked        bool                  // hide Content-Length
	mutate         func(r *http.Request) // after signing
}

// do sends c to srv over real HTTP and returns the status and either the
// echoed handler view or the problem type slug.
func do(t *testing.T, srv *httptest.Server, c call) (int, echoed, string) {
	t.Helper()
	var body io.Reader = strings.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(strings.NewReader(c.body)) // unknown length
	}
	r, err := http.NewRequest(c.method, srv.URL+c.target, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.nonce == "" {
		c.nonce = signing.NewNonce()
	}
	if c.appKey != "" {
		if err := signing.SignRequest(r, c.appKey, []byte(c.secret), c.at, c.nonce, []byte(c.body)); err != nil {
			t.Fatal(err)
		}
	}
	if c.mutate != nil {
		c.mutate(r)
	}
	resp, err := srv.Client().Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusOK {
		var got echoed
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatalf("decode %s: %v", raw, err)
		}
		return resp.StatusCode, got, ""
	}
	var p struct{ Type string }
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("decode problem %s: %v", raw, err)
	}
	return resp.StatusCode, echoed{}, strings.TrimPrefix(p.Type, "https://pushledger.dev/problems/")
}

func TestMiddlewareAccepts(t *testing.T) {
	srv, clock := server(t)
	now := clock.Now()
	status, got, slug := do(t, srv, call{
		method: "POST", target: "/v1/apps/app_3f9c/messages/msg%2F01?b=2&a=hello+world",
		appKey: katAppKey, secret: katSecret, at: now, body: katBody,
	})
	if status != http.StatusOK {
		t.Fatalf("status %d %s", status, slug)
	}
	want := echoed{AppID: "app-1", Body: katBody, Path: "/v1/apps/app_3f9c/messages/msg%2F01"}
	if got != want {
		t.Fatalf("handler saw %+v, want %+v", got, want)
	}

	// Empty body, GET, chunked larger body on the batch route.
	if status, got, slug := do(t, srv, call{method: "GET", target: "/v1/ping", appKey: "app_two", secret: "second-secret", at: now}); status != 200 || got.AppID != "app-2" {
		t.Fatalf("GET: %d %s %+v", status, slug, got)
	}
	big := strings.Repeat("x", 3000)
	if status, got, slug := do(t, srv, call{method: "POST", target: "/batch", appKey: katAppKey, secret: katSecret, at: now, body: big, chunked: true}); status != 200 || got.Body != big {
		t.Fatalf("batch: %d %s", status, slug)
	}
}

func TestMiddlewareRejects(t *testing.T) {
	now := time.Unix(katTimestamp, 0)
	ok := call{method: "POST", target: "/v1/messages?a=1", appKey: katAppKey, secret: katSecret, at: now, body: `{"x":1}`}
	with := func(f func(c *call)) call { c := ok; f(&c); return c }
	set := func(k, v string) func(*http.Request) { return func(r *http.Request) { r.Header.Set(k, v) } }
	tests := []struct {
		name   string
		call   call
		status int
		slug   string
	}{
		{"no headers", with(func(c *call) { c.appKey = "" }), 401, "missing-credentials"},
		{"no signature", with(func(c *call) { c.mutate = func(r *http.Request) { r.Header.Del("X-Signature") } }), 401, "missing-credentials"},
		{"no nonce", with(func(c *call) { c.mutate = func(r *http.Request) { r.Header.Del("X-Nonce") } }), 401, "missing-credentials"},
		{"malformed timestamp", with(func(c *call) { c.mutate = set("X-Timestamp", "yesterday") }), 400, "malformed-credentials"},
		{"malformed nonce", with(func(c *call) { c.nonce = "short" }), 400, "malformed-credentials"},
		{"malformed signature", with(func(c *call) { c.mutate = set("X-Signature", "sha256=abc") }), 400, "malformed-credentials"},
		{"malformed query", with(func(c *call) { c.mutate = func(r *http.Request) { r.URL.RawQuery = "a=%zz" } }), 400, "malformed-credentials"},
		{"stale past", with(func(c *call) { c.at = now.Add(-301 * time.Second) }), 401, "stale-timestamp"},
		{"stale future", with(func(c *call) { c.at = now.Add(301 * time.Second) }), 401, "stale-timestamp"},
		{"unknown app", with(func(c *call) { c.appKey = "app_unknown" }), 401, "unknown-app"},
		{"wrong secret", with(func(c *call) { c.secret = "not-the-secret" }), 401, "bad-signature"},
		{"upper-case signature", with(func(c *call) {
			c.mutate = func(r *http.Request) { r.Header.Set("X-Signature", strings.ToUpper(r.Header.Get("X-Signature"))) }
		}), 401, "bad-signature"},
		{"body tampered", with(func(c *call) {
			c.mutate = func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader(`{"x":2}`)) }
		}), 401, "bad-signature"},
		{"query tampered", with(func(c *call) { c.mutate = func(r *http.Request) { r.URL.RawQuery = "a=2" } }), 401, "bad-signature"},
		{"path tampered", with(func(c *call) { c.mutate = func(r *http.Request) { r.URL.Path = "/v1/messagez" } }), 401, "bad-signature"},
		{"method tampered", with(func(c *call) { c.mutate = func(r *http.Request) { r.Method = "PUT" } }), 401, "bad-signature"},
		{"body too large", with(func(c *call) { c.body = strings.Repeat("x", 1025) }), 413, "payload-too-large"},
		{"body too large, no length", with(func(c *call) { c.body = strings.Repeat("x", 1025); c.chunked = true }), 413, "payload-too-large"},
		{"batch route too large", with(func(c *call) { c.target = "/batch"; c.body = strings.Repeat("x", 4097) }), 413, "payload-too-large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := server(t)
			status, _, slug := do(t, srv, tt.call)
			if status != tt.status || slug != tt.slug {
				t.Fatalf("got %d %s, want %d %s", status, slug, tt.status, tt.slug)
			}
		})
	}
}

func TestMiddlewareReplay(t *testing.T) {
	srv, clock := server(t)
	c := call{method: "POST", target: "/v1/messages", appKey: katAppKey, secret: katSecret, at: clock.Now(), nonce: signing.NewNonce(), body: "{}"}

	// A forged request does not burn the nonce.
	forged := c
	forged.secret = "forged"
	if status, _, slug := do(t, srv, forged); slug != "bad-signature" {
		t.Fatalf("forged: %d %s", status, slug)
	}
	if status, _, slug := do(t, srv, c); status != 200 {
		t.Fatalf("first: %d %s", status, slug)
	}
	if status, _, slug := do(t, srv, c); status != 401 || slug != "replayed-nonce" {
		t.Fatalf("replay: %d %s", status, slug)
	}
	other := c
	other.appKey, other.secret = "app_two", "second-secret"
	if status, _, slug := do(t, srv, other); status != 200 {
		t.Fatalf("same nonce, other app: %d %s", status, slug)
	}
	// Once the timestamp has left the window the replay is stale instead.
	clock.Advance(301 * time.Second)
	if status, _, slug := do(t, srv, c); slug != "stale-timestamp" {
		t.Fatalf("late replay: %d %s", status, slug)
	}
}

func TestMiddlewareErrorIsWrappedNotWritten(t *testing.T) {
	clock := newFakeClock(time.Unix(katTimestamp, 0))
	v := newVerifier(t, signing.Config{Apps: testApps(), Nonces: signing.NewMemoryNonces(clock.Now), Now: clock.Now})
	e := echo.New()
	req := httptest.NewRequest(http.MethodPost, "/v1/x", bytes.NewReader(nil))
	rec := httptest.NewRecorder()
	c := e.NewContext(req, rec)
	err := v.Middleware()(func(echo.Context) error { t.Fatal("handler called"); return nil })(c)
	var me *signing.MissingHeadersError
	if !errors.As(err, &me) || len(me.Headers) != 4 {
		t.Fatalf("err = %v", err)
	}
	if c.Response().Committed {
		t.Fatal("middleware wrote a response")
	}
}
