package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/pushledger/pushledger/adapters/kv/pebblekv"
	pebbleledger "github.com/pushledger/pushledger/adapters/ledger/pebble"
	"github.com/pushledger/pushledger/adapters/secretbox"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/signing"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/projections"
)

const adminToken = "test-admin-token"

// apiServer is the API on in-memory stores, served over real HTTP, with a
// settable clock.
type apiServer struct {
	url string
	now time.Time
}

func (s *apiServer) clock() time.Time { return s.now }

func newAPIServer(t *testing.T) *apiServer {
	t.Helper()
	s := &apiServer{now: time.Now()}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	led, err := pebbleledger.Open(pebbleledger.Config{Dir: "ledger", FS: vfs.NewMem(), Logger: log, CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = led.Close() })
	st, err := pebblekv.Open(pebblekv.Config{Dir: "state", FS: vfs.NewMem(), CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cmds, err := commands.New(led, commands.Config{Logger: log, Now: s.clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := projections.EnsureDeviceBriefs(st); err != nil {
		t.Fatal(err)
	}
	apps := projections.NewApps(led)
	devices, err := projections.NewRunner(projections.Devices{}, st, led, log)
	if err != nil {
		t.Fatal(err)
	}
	key, err := secretbox.ParseKey(secretbox.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	box, err := secretbox.New(key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = apps.Run(ctx); done <- struct{}{} }()
	go func() { _ = devices.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done }) // before the stores close
	srv, err := api.New(api.Config{AdminToken: adminToken, Logger: log, Now: s.clock},
		api.Deps{Commands: cmds, Ledger: led, Apps: apps, Store: st, Devices: devices, Box: box, Nonces: signing.NewMemoryNonces(s.clock)})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

// createApp creates an app through the admin API.
func (s *apiServer) createApp(t *testing.T) api.CreatedApp {
	t.Helper()
	r, err := http.NewRequest("POST", s.url+"/admin/v1/apps", strings.NewReader(`{"name":"test"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+adminToken)
	r.Header.Set("Content-Type", "application/json")
	status, raw := send(t, r)
	if status != http.StatusCreated {
		t.Fatalf("create app: %d %s", status, raw)
	}
	var a api.CreatedApp
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// signed returns a request signed as app at the given time.
func (s *apiServer) signed(t *testing.T, a api.CreatedApp, method, path, body string, at time.Time) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, s.url+path, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	if err := signing.SignRequest(r, a.AppKey, []byte(a.AppSecret), at, signing.NewNonce(), []byte(body)); err != nil {
		t.Fatal(err)
	}
	return r
}

func send(t *testing.T, r *http.Request) (int, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// problemOf sends r and decodes the problem it answers with.
func problemOf(t *testing.T, r *http.Request) api.Problem {
	t.Helper()
	status, raw := send(t, r)
	var p api.Problem
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("%d %s: not a problem: %v", status, raw, err)
	}
	if p.Status != status {
		t.Fatalf("problem status %d, HTTP status %d", p.Status, status)
	}
	return p
}

// TestStaleTimestampDetail: the stale-timestamp problem's detail is a
// sentence for the client (both times and the window), with no error-chain
// prefix.
func TestStaleTimestampDetail(t *testing.T) {
	s := newAPIServer(t)
	s.now = time.Unix(1700000000, 0)
	a := s.createApp(t)
	p := problemOf(t, s.signed(t, a, "GET", "/v1/messages", "", s.now.Add(-301*time.Second)))
	if p.Type != api.ProblemBase+api.SlugStaleTimestamp || p.Status != 401 {
		t.Fatalf("got %s %d, want stale-timestamp 401", p.Type, p.Status)
	}
	const want = "X-Timestamp 1699999699 is 301 s behind the server clock (1700000000); at most 300 s is allowed"
	if p.Detail != want {
		t.Errorf("detail %q\nwant   %q", p.Detail, want)
	}
	p = problemOf(t, s.signed(t, a, "GET", "/v1/messages", "", s.now.Add(400*time.Second)))
	if want := "X-Timestamp 1700000400 is 400 s ahead of the server clock (1700000000); at most 300 s is allowed"; p.Detail != want {
		t.Errorf("detail %q\nwant   %q", p.Detail, want)
	}
}

// TestAuthProblemDetails: no authentication problem leaks the Go error
// chain ("authenticate request: signing: ...") into its detail.
func TestAuthProblemDetails(t *testing.T) {
	s := newAPIServer(t)
	a := s.createApp(t)
	get := func(mut func(r *http.Request)) *http.Request {
		r := s.signed(t, a, "GET", "/v1/messages", "", s.now)
		if mut != nil {
			mut(r)
		}
		return r
	}
	replayed := get(nil)
	if status, raw := send(t, replayed.Clone(context.Background())); status != http.StatusOK {
		t.Fatalf("first request: %d %s", status, raw)
	}
	tests := []struct {
		name   string
		req    *http.Request
		slug   string
		detail string
	}{
		{"missing headers", get(func(r *http.Request) { r.Header.Del(signing.HeaderNonce); r.Header.Del(signing.HeaderSignature) }),
			api.SlugMissingCreds, "the X-Nonce, X-Signature headers are missing or empty"},
		{"missing header", get(func(r *http.Request) { r.Header.Del(signing.HeaderSignature) }),
			api.SlugMissingCreds, "the X-Signature header is missing or empty"},
		{"malformed nonce", get(func(r *http.Request) { r.Header.Set(signing.HeaderNonce, "short") }),
			api.SlugMalformedCreds, "X-Nonce must be 16-64 characters of [A-Za-z0-9_-]"},
		{"malformed signature", get(func(r *http.Request) { r.Header.Set(signing.HeaderSignature, "abcd") }),
			api.SlugMalformedCreds, "X-Signature must be 64 lowercase hex digits"},
		{"malformed query", get(func(r *http.Request) { r.URL.RawQuery = "a=%zz" }),
			api.SlugMalformedCreds, `the query string cannot be canonicalised: invalid %-escape "%zz"`},
		{"unknown app", get(func(r *http.Request) { r.Header.Set(signing.HeaderAppKey, "pk_nobody") }),
			api.SlugUnknownApp, "no app has this app key"},
		{"bad signature", get(func(r *http.Request) { r.Header.Set(signing.HeaderNonce, signing.NewNonce()) }),
			api.SlugBadSignature, "the signature does not match the request"},
		{"upper-case signature", get(func(r *http.Request) {
			r.Header.Set(signing.HeaderSignature, strings.ToUpper(r.Header.Get(signing.HeaderSignature)))
		}), api.SlugBadSignature, "the signature does not match the request"},
		{"replayed nonce", replayed, api.SlugReplayedNonce, "this nonce was already used within the timestamp window"},
		{"stale timestamp", s.signed(t, a, "GET", "/v1/messages", "", s.now.Add(-time.Hour)), api.SlugStaleTimestamp, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := problemOf(t, tt.req)
			if p.Type != api.ProblemBase+tt.slug {
				t.Fatalf("type %s, want %s (detail %q)", p.Type, tt.slug, p.Detail)
			}
			if tt.detail != "" && p.Detail != tt.detail {
				t.Errorf("detail %q\nwant   %q", p.Detail, tt.detail)
			}
			if p.Detail == "" || strings.Contains(p.Detail, "authenticate request") || strings.Contains(p.Detail, "signing:") {
				t.Errorf("detail %q is not a clean sentence", p.Detail)
			}
		})
	}
}

// TestAudienceNamingNoTarget: an audience without any selector (missing,
// {}, only empty lists) is the empty-audience problem, like an audience
// that resolves to no device; two kinds of selector stay invalid-request.
func TestAudienceNamingNoTarget(t *testing.T) {
	s := newAPIServer(t)
	a := s.createApp(t)
	if status, raw := send(t, s.signed(t, a, "PUT", "/v1/devices/phone-1", `{"platform":"android"}`, s.now)); status >= 300 {
		t.Fatalf("register device: %d %s", status, raw)
	}
	const notif = `"notification":{"title":"t","body":"b"}`
	tests := []struct {
		name, body string
		slug       string
		status     int
		detail     string
	}{
		{"missing", `{` + notif + `}`, api.SlugEmptyAudience, 422, "the audience names no target"},
		{"null", `{"audience":null,` + notif + `}`, api.SlugEmptyAudience, 422, "the audience names no target"},
		{"empty object", `{"audience":{},` + notif + `}`, api.SlugEmptyAudience, 422, "the audience names no target"},
		{"empty aliases", `{"audience":{"aliases":[]},` + notif + `}`, api.SlugEmptyAudience, 422, "the audience names no target"},
		{"empty device ids", `{"audience":{"device_ids":[]},` + notif + `}`, api.SlugEmptyAudience, 422, "the audience names no target"},
		{"only empty lists", `{"audience":{"device_ids":[],"aliases":[],"tags":{"all_of":[],"any_of":[],"none_of":[]},"broadcast":false},` + notif + `}`,
			api.SlugEmptyAudience, 422, "the audience names no target"},
		{"empty tags", `{"audience":{"tags":{}},` + notif + `}`, api.SlugEmptyAudience, 422, "the audience names no target"},
		{"resolves to no device", `{"audience":{"device_ids":["ghost"]},` + notif + `}`, api.SlugEmptyAudience, 422, "audience resolves to no device"},
		{"two kinds", `{"audience":{"device_ids":["phone-1"],"broadcast":true},` + notif + `}`, api.SlugInvalidRequest, 422, ""},
		{"two kinds, one list empty", `{"audience":{"device_ids":["phone-1"],"aliases":[],"tags":{"any_of":["vip"]}},` + notif + `}`, api.SlugInvalidRequest, 422, ""},
		{"tags with only none_of", `{"audience":{"tags":{"none_of":["muted"]}},` + notif + `}`, api.SlugInvalidRequest, 422, ""},
		{"in a batch", `{"messages":[{"audience":{"broadcast":true},` + notif + `},{"audience":{"aliases":[]},` + notif + `}]}`,
			api.SlugEmptyAudience, 422, "the audience names no target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := problemOf(t, s.signed(t, a, "POST", "/v1/messages", tt.body, s.now))
			if p.Type != api.ProblemBase+tt.slug || p.Status != tt.status {
				t.Fatalf("got %s %d (%q), want %s %d", p.Type, p.Status, p.Detail, tt.slug, tt.status)
			}
			if tt.detail != "" && p.Detail != tt.detail {
				t.Errorf("detail %q, want %q", p.Detail, tt.detail)
			}
			if tt.name == "in a batch" && (len(p.Errors) != 1 || p.Errors[0].Pointer != "/messages/1" || p.Errors[0].Detail != tt.detail) {
				t.Errorf("errors %+v, want one at /messages/1", p.Errors)
			}
		})
	}
}
