// Package contract_test validates every request and answer of a realistic
// scenario, over real HTTP against the real embedded platform, with
// kin-openapi against schema/openapi.yaml; and checks that apps are
// isolated from each other.
package contract_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/signing"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform/platformtest"
	"github.com/pushledger/pushledger/commands"
	appdomain "github.com/pushledger/pushledger/domain/app"
	msgdomain "github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/projections"
	"github.com/pushledger/pushledger/schema"
)

// ---------------------------------------------------------------------------
// The platform. cmd/pushledger/internal/platform/platformtest cannot be
// imported from api/ (Go's internal rule), so bootPlatform assembles the
// same parts the embedded profile wires in platform.Open and Platform.Run:
// the Pebble ledger and read-model store, the commands, the app directory,
// the device and message projections, the dispatcher with the webhook
// channel, and the API, served on a loopback port.

type platformInstance struct {
	URL        string
	AdminToken string
	API        *api.Server
	// Now is the API's clock (signature window, idempotency window).
	Now      func() time.Time
	Commands *commands.Handler
}

// bootPlatform starts the embedded platform (the real wiring of
// platform.Open and Platform.Run); now, when not nil, is its clock.
func bootPlatform(t *testing.T, now func() time.Time) *platformInstance {
	t.Helper()
	if now == nil {
		now = time.Now
	}
	p := platformtest.StartWith(t, platform.Config{Now: now})
	return &platformInstance{URL: p.URL, AdminToken: p.P.AdminToken, API: p.P.API, Now: now, Commands: p.P.Commands}
}

// ---------------------------------------------------------------------------
// Harness: every request goes through the real server over HTTP, and both
// the request and the response are validated against schema/openapi.yaml.

// creds sign /v1 requests as one app.
type creds struct {
	appID, key, secret string
}

// req describes one call.
type req struct {
	method string
	path   string // with the query, as sent
	body   any    // nil: no body; []byte or string: sent as is; else JSON-encoded
	header map[string]string

	app   *creds // sign /v1 requests with these credentials
	admin string // Authorization: Bearer admin (for /admin requests); "" none
	// sign, when set, signs the request instead of app (hand-made
	// signatures: stale timestamps, replays, wrong secrets).
	sign func(r *http.Request, body []byte)

	// specInvalid: the request deliberately violates the spec (the
	// validator must reject it; the response must still match the spec).
	specInvalid bool
	// anySpec: the spec cannot tell (for example a path that is not a
	// UUID where only format: uuid says so); request validation is skipped.
	anySpec bool
}

type res struct {
	status  int
	header  http.Header
	body    []byte
	problem api.Problem
}

func (r res) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

type contract struct {
	t      *testing.T
	in     *platformInstance
	doc    *openapi3.T
	router routers.Router
	hc     *http.Client

	mu       *sync.Mutex
	covered  map[string]map[int]bool // "METHOD /path/{x}" -> statuses seen
	problems map[string]bool         // problem slugs seen
}

func newContract(t *testing.T, in *platformInstance) *contract {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(schema.OpenAPI)
	if err != nil {
		t.Fatalf("load schema/openapi.yaml: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi %q, want 3.1.0", doc.OpenAPI)
	}
	if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("schema/openapi.yaml is not valid: %v", err)
	}
	// Route on the request path whatever the test server's address.
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatalf("router: %v", err)
	}
	return &contract{t: t, in: in, doc: doc, router: router, hc: &http.Client{Timeout: 60 * time.Second},
		mu: &sync.Mutex{}, covered: map[string]map[int]bool{}, problems: map[string]bool{}}
}

// acceptAuth accepts every security requirement: the server checks
// authentication itself, and the test asserts its answers.
func acceptAuth(context.Context, *openapi3filter.AuthenticationInput) error { return nil }

func (c *contract) do(r req) res {
	c.t.Helper()
	var body []byte
	switch b := r.body.(type) {
	case nil:
	case []byte:
		body = b
	case string:
		body = []byte(b)
	default:
		var err error
		if body, err = json.Marshal(b); err != nil {
			c.t.Fatal(err)
		}
	}
	newRequest := func() *http.Request {
		var rd io.Reader = http.NoBody
		if r.body != nil {
			rd = bytes.NewReader(body)
		}
		hr, err := http.NewRequestWithContext(context.Background(), r.method, c.in.URL+r.path, rd)
		if err != nil {
			c.t.Fatal(err)
		}
		if r.body != nil {
			hr.Header.Set("Content-Type", "application/json")
		}
		return hr
	}
	hr := newRequest()
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	switch {
	case r.sign != nil:
		r.sign(hr, body)
	case r.app != nil:
		if err := signing.SignRequest(hr, r.app.key, []byte(r.app.secret), c.in.Now(), signing.NewNonce(), body); err != nil {
			c.t.Fatal(err)
		}
	case r.admin != "":
		hr.Header.Set("Authorization", "Bearer "+r.admin)
	}

	// The request against the spec, on a copy (validation reads the body
	// and may set defaults).
	vr := newRequest()
	vr.Header = hr.Header.Clone()
	route, params, err := c.router.FindRoute(vr)
	if err != nil {
		c.t.Fatalf("%s %s: no operation in the spec: %v", r.method, r.path, err)
	}
	in := &openapi3filter.RequestValidationInput{Request: vr, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: acceptAuth, MultiError: true}}
	verr := openapi3filter.ValidateRequest(context.Background(), in)
	switch {
	case r.anySpec:
	case r.specInvalid && verr == nil:
		c.t.Errorf("%s %s: the spec accepts a request the test meant to be invalid (body %.200s)", r.method, r.path, body)
	case !r.specInvalid && verr != nil:
		c.t.Errorf("%s %s: request does not match the spec: %v", r.method, r.path, verr)
	}

	resp, err := c.hc.Do(hr)
	if err != nil {
		c.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	out := res{status: resp.StatusCode, header: resp.Header, body: rb}

	// The response against the spec: documented status, content type and
	// body schema.
	if err := openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(rb)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}); err != nil {
		c.t.Errorf("%s %s -> %d: response does not match the spec: %v\nbody: %.1000s", r.method, r.path, resp.StatusCode, err, rb)
	}
	if resp.StatusCode >= 400 {
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			c.t.Errorf("%s %s -> %d: Content-Type %q, want application/problem+json", r.method, r.path, resp.StatusCode, ct)
		}
		if err := json.Unmarshal(rb, &out.problem); err != nil {
			c.t.Errorf("%s %s -> %d: problem: %v", r.method, r.path, resp.StatusCode, err)
		}
		if out.problem.Status != resp.StatusCode {
			c.t.Errorf("%s %s: problem status %d, HTTP status %d", r.method, r.path, out.problem.Status, resp.StatusCode)
		}
		if p, _, _ := strings.Cut(r.path, "?"); out.problem.Instance != p {
			c.t.Errorf("%s %s: problem instance %q", r.method, r.path, out.problem.Instance)
		}
	}

	c.mu.Lock()
	op := route.Method + " " + route.Path
	if c.covered[op] == nil {
		c.covered[op] = map[int]bool{}
	}
	c.covered[op][resp.StatusCode] = true
	if resp.StatusCode >= 400 {
		c.problems[strings.TrimPrefix(out.problem.Type, api.ProblemBase)] = true
	}
	c.mu.Unlock()
	return out
}

// ok calls and expects status want; it decodes the body into out (if not nil).
func (c *contract) ok(r req, want int, out any) res {
	c.t.Helper()
	got := c.do(r)
	if got.status != want {
		c.t.Fatalf("%s %s: got %s, want %d", r.method, r.path, got, want)
	}
	if out != nil {
		reflect.ValueOf(out).Elem().SetZero() // decode into a fresh value
		if err := json.Unmarshal(got.body, out); err != nil {
			c.t.Fatalf("%s %s: decode: %v", r.method, r.path, err)
		}
	}
	return got
}

// fails calls and expects a problem of this status and slug.
func (c *contract) fails(r req, status int, slug string) res {
	c.t.Helper()
	got := c.do(r)
	if got.status != status || got.problem.Type != api.ProblemBase+slug {
		c.t.Errorf("%s %s: got %s, want %d %s", r.method, r.path, got, status, api.ProblemBase+slug)
	}
	return got
}

// ---------------------------------------------------------------------------
// The scenario.

type message = map[string]any

func notif(title string) message {
	return message{"title": title, "body": "body of " + title}
}

func TestContract(t *testing.T) {
	in := bootPlatform(t, nil)
	c := newContract(t, in)
	admin := in.AdminToken

	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(rcv.Close)

	// --- Operations endpoints ----------------------------------------------
	t.Run("operations", func(t *testing.T) {
		c := c.with(t)
		var h map[string]string
		c.ok(req{method: "GET", path: "/healthz"}, 200, &h)
		if got := c.ok(req{method: "GET", path: "/openapi.yaml"}, 200, nil); !bytes.Equal(got.body, schema.OpenAPI) {
			t.Error("/openapi.yaml does not serve schema/openapi.yaml")
		}
		if got := c.ok(req{method: "GET", path: "/metrics"}, 200, nil); !bytes.Contains(got.body, []byte("pushledger_http_requests_total")) {
			t.Errorf("/metrics lacks pushledger_http_requests_total:\n%.500s", got.body)
		}
	})

	// --- Admin --------------------------------------------------------------
	var A, B creds
	t.Run("admin", func(t *testing.T) {
		c := c.with(t)
		var a, b api.CreatedApp
		c.ok(req{method: "POST", path: "/admin/v1/apps", admin: admin, body: message{"name": "shop", "webhook_url": rcv.URL + "/push"}}, 201, &a)
		c.ok(req{method: "POST", path: "/admin/v1/apps", admin: admin, body: message{"name": "news"}}, 201, &b)
		A, B = creds{a.AppID, a.AppKey, a.AppSecret}, creds{b.AppID, b.AppKey, b.AppSecret}
		if a.AppID == b.AppID || a.AppKey == b.AppKey || a.AppSecret == b.AppSecret {
			t.Fatalf("two apps share credentials: %+v %+v", a, b)
		}

		if r := c.fails(req{method: "POST", path: "/admin/v1/apps", body: message{"name": "x"}}, 401, api.SlugUnauthorized); !strings.Contains(r.problem.Detail, "need Authorization") {
			t.Errorf("no admin token: detail %q", r.problem.Detail)
		}
		if r := c.fails(req{method: "POST", path: "/admin/v1/apps", admin: "wrong", body: message{"name": "x"}}, 401, api.SlugUnauthorized); !strings.Contains(r.problem.Detail, "does not carry the admin token") {
			t.Errorf("wrong admin token: detail %q", r.problem.Detail)
		}
		c.fails(req{method: "GET", path: "/admin/v1/apps"}, 401, api.SlugUnauthorized)
		c.fails(req{method: "GET", path: "/admin/v1/apps/" + a.AppID}, 401, api.SlugUnauthorized)
		c.fails(req{method: "POST", path: "/admin/v1/apps", admin: admin, body: `{"name":`, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "POST", path: "/admin/v1/apps", admin: admin, body: message{"name": "x", "secret": "mine"}, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "POST", path: "/admin/v1/apps", admin: admin, body: message{"name": ""}, specInvalid: true}, 422, api.SlugInvalidRequest)

		var list struct{ Apps []api.AppView }
		c.ok(req{method: "GET", path: "/admin/v1/apps", admin: admin}, 200, &list)
		if len(list.Apps) != 2 || list.Apps[0].Name != "news" || list.Apps[1].Name != "shop" {
			t.Errorf("apps %+v, want news and shop by name", list.Apps)
		}
		var v api.AppView
		c.ok(req{method: "GET", path: "/admin/v1/apps/" + a.AppID, admin: admin}, 200, &v)
		if v.AppKey != a.AppKey || !v.Channels["webhook"].Enabled || v.Channels["webhook"].Settings["url"] != rcv.URL+"/push" {
			t.Errorf("app view %+v", v)
		}
		c.fails(req{method: "GET", path: "/admin/v1/apps/nosuchapp", admin: admin}, 404, api.SlugNotFound)

		c.ok(req{method: "PUT", path: "/admin/v1/apps/" + a.AppID + "/channels/FCM", admin: admin,
			body: message{"enabled": false, "priority": 5, "settings": message{"project": "demo"}}}, 200, &v)
		if cfg, ok := v.Channels["fcm"]; !ok || cfg.Priority != 5 || cfg.Enabled {
			t.Errorf("channel fcm not configured (lower-cased): %+v", v.Channels)
		}
		c.fails(req{method: "PUT", path: "/admin/v1/apps/" + a.AppID + "/channels/fcm", admin: admin, body: message{"enabled": "yes", "priority": 5}, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "PUT", path: "/admin/v1/apps/nosuchapp/channels/fcm", admin: admin, body: message{"enabled": true, "priority": 1}}, 404, api.SlugNotFound)
		c.ok(req{method: "DELETE", path: "/admin/v1/apps/" + a.AppID + "/channels/fcm", admin: admin}, 200, &v)
		if _, ok := v.Channels["fcm"]; ok {
			t.Errorf("channel fcm not removed: %+v", v.Channels)
		}
		c.ok(req{method: "DELETE", path: "/admin/v1/apps/" + a.AppID + "/channels/fcm", admin: admin}, 200, nil) // idempotent
		c.fails(req{method: "DELETE", path: "/admin/v1/apps/nosuchapp/channels/fcm", admin: admin}, 404, api.SlugNotFound)

		c.ok(req{method: "POST", path: "/admin/v1/apps/" + a.AppID + "/blacklist", admin: admin,
			body: message{"kind": "device", "add": []string{"stolen-1", "stolen-2"}}}, 200, &v)
		c.ok(req{method: "POST", path: "/admin/v1/apps/" + a.AppID + "/blacklist", admin: admin,
			body: message{"kind": "device", "remove": []string{"stolen-2"}}}, 200, &v)
		if !slices.Equal(v.Blacklist["device"], []string{"stolen-1"}) {
			t.Errorf("blacklist %+v, want device: [stolen-1]", v.Blacklist)
		}
		c.ok(req{method: "POST", path: "/admin/v1/apps/" + a.AppID + "/blacklist", admin: admin,
			body: message{"kind": "user", "add": []string{"mallory"}}}, 200, &v)
		c.fails(req{method: "POST", path: "/admin/v1/apps/" + a.AppID + "/blacklist", admin: admin,
			body: message{"kind": "planet", "add": []string{"mars"}}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "POST", path: "/admin/v1/apps/nosuchapp/blacklist", admin: admin,
			body: message{"kind": "device", "add": []string{"x"}}}, 404, api.SlugNotFound)
	})
	if A.key == "" {
		t.Fatal("no apps")
	}

	// --- Devices ------------------------------------------------------------
	t.Run("devices", func(t *testing.T) {
		c := c.with(t)
		var d projections.DeviceView
		c.ok(req{method: "PUT", path: "/v1/devices/phone-1", app: &A,
			body: message{"platform": "android", "brand": "acme", "model": "rocket", "os_version": "15", "tokens": message{"fcm": "tok-1"}}}, 200, &d)
		if d.AppID != A.appID || d.DeviceID != "phone-1" || !d.Active || d.Profile.Tokens["fcm"] != "tok-1" {
			t.Errorf("registered %+v", d)
		}
		c.ok(req{method: "PUT", path: "/v1/devices/phone-2", app: &A, body: message{"platform": "ios"}}, 200, nil)
		c.ok(req{method: "PUT", path: "/v1/devices/tablet:3", app: &A, body: message{"platform": "harmony"}}, 200, nil)
		c.ok(req{method: "PUT", path: "/v1/devices/stolen-1", app: &A, body: message{"platform": "web"}}, 200, nil)
		c.ok(req{method: "PUT", path: "/v1/devices/phone-1/alias", app: &A, body: message{"alias": "alice"}}, 200, &d)
		if d.Alias != "alice" {
			t.Errorf("alias %q", d.Alias)
		}
		c.ok(req{method: "PUT", path: "/v1/devices/tablet:3/alias", app: &A, body: message{"alias": "alice"}}, 200, nil)
		c.ok(req{method: "PUT", path: "/v1/devices/stolen-1/alias", app: &A, body: message{"alias": "mallory"}}, 200, nil)
		c.ok(req{method: "POST", path: "/v1/devices/phone-1/tags", app: &A, body: message{"add": []string{"vip", "beta"}}}, 200, &d)
		c.ok(req{method: "POST", path: "/v1/devices/phone-1/tags", app: &A, body: message{"remove": []string{"beta"}, "add": []string{"eu"}}}, 200, &d)
		if !slices.Equal(d.Tags, []string{"eu", "vip"}) {
			t.Errorf("tags %v, want [eu vip]", d.Tags)
		}
		c.ok(req{method: "POST", path: "/v1/devices/phone-2/tags", app: &A, body: message{"add": []string{"vip", "muted"}}}, 200, nil)
		c.ok(req{method: "GET", path: "/v1/devices/phone-1", app: &A}, 200, &d)
		if d.Alias != "alice" || d.Profile.Platform != "android" || d.Revision == 0 {
			t.Errorf("device %+v", d)
		}
		c.ok(req{method: "DELETE", path: "/v1/devices/phone-2/alias", app: &A}, 200, &d) // no alias: idempotent
		if d.Alias != "" {
			t.Errorf("alias %q after unbinding", d.Alias)
		}

		c.fails(req{method: "POST", path: "/v1/devices/phone-1/tags", app: &A, body: message{}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "POST", path: "/v1/devices/phone-1/tags", app: &A, body: message{"add": []string{strings.Repeat("t", 65)}}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "PUT", path: "/v1/devices/phone-9", app: &A, body: message{"platform": "symbian"}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "PUT", path: "/v1/devices/phone-9", app: &A, body: message{"platform": "ios", "colour": "red"}, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "PUT", path: "/v1/devices/phone-9", app: &A, body: "not json", specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "PUT", path: "/v1/devices/phone-1/alias", app: &A, body: message{"alias": ""}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "GET", path: "/v1/devices/phone-9", app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/v1/devices/" + strings.Repeat("x", 129), app: &A, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "PUT", path: "/v1/devices/phone-9/alias", app: &A, body: message{"alias": "bob"}}, 404, api.SlugNotFound)
		c.fails(req{method: "DELETE", path: "/v1/devices/phone-9/alias", app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/devices/phone-9/tags", app: &A, body: message{"add": []string{"x"}}}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/devices/phone-9/logout", app: &A}, 404, api.SlugNotFound)

		// A gateway credential for a registered device.
		var cred api.DeviceCredential
		c.ok(req{method: "POST", path: "/v1/devices/phone-1/credential", app: &A}, 200, &cred)
		key, err := base64.StdEncoding.DecodeString(cred.ServerKey)
		if cred.DeviceID != "phone-1" || !strings.HasPrefix(cred.Credential, "v1.") || cred.GatewayAddr == "" || err != nil || len(key) != 32 {
			t.Errorf("credential %+v (server key: %v)", cred, err)
		}
		c.fails(req{method: "POST", path: "/v1/devices/phone-9/credential", app: &A}, 404, api.SlugNotFound)
	})

	// --- Messages -----------------------------------------------------------
	var first string
	var sentIDs []string
	send := func(c *contract, body any, hdr map[string]string) string {
		c.t.Helper()
		var out api.AcceptedResponse
		c.ok(req{method: "POST", path: "/v1/messages", app: &A, body: body, header: hdr}, 202, &out)
		if len(out.MessageIDs) != 1 {
			c.t.Fatalf("%d ids", len(out.MessageIDs))
		}
		sentIDs = append(sentIDs, out.MessageIDs[0])
		return out.MessageIDs[0]
	}
	status := func(c *contract, cr *creds, id string) projections.MessageStatus {
		c.t.Helper()
		var st projections.MessageStatus
		c.ok(req{method: "GET", path: "/v1/messages/" + id, app: cr}, 200, &st)
		return st
	}
	t.Run("messages", func(t *testing.T) {
		c := c.with(t)
		first = send(c, message{"audience": message{"aliases": []string{"alice"}}, "notification": notif("Shipped"),
			"data": message{"order": 42}, "priority": "high", "ttl": 3600, "collapse_id": "order-42"}, nil)
		eventually(t, 15*time.Second, "message sent", func() bool { return status(c, &A, first).State == "sent" })
		st := status(c, &A, first)
		if st.ID != first || st.AppID != A.appID || st.TargetCount != 2 || st.Attempt != 1 || st.Channel != "webhook" ||
			st.Counts["sent"] != 1 || st.Channels["webhook"] == nil || st.Channels["webhook"].Sent != 1 {
			t.Errorf("status %+v", st)
		}
		var hist struct {
			MessageID string             `json:"message_id"`
			Events    []api.MessageEvent `json:"events"`
		}
		c.ok(req{method: "GET", path: "/v1/messages/" + first + "/events", app: &A}, 200, &hist)
		var types []string
		for _, e := range hist.Events {
			types = append(types, e.Type)
		}
		if hist.MessageID != first || strings.Join(types, " ") != "message.accepted.v1 message.sending.v1 message.sent.v1" {
			t.Errorf("history %s %v", hist.MessageID, types)
		}

		// Idempotency: header for a single message, field in the body.
		k1 := send(c, message{"audience": message{"device_ids": []string{"phone-1"}}, "data": message{"n": 1}}, map[string]string{"Idempotency-Key": "order-7"})
		k2 := send(c, message{"audience": message{"device_ids": []string{"phone-1"}}, "data": message{"n": 2}}, map[string]string{"Idempotency-Key": "order-7"})
		k3 := send(c, message{"audience": message{"device_ids": []string{"phone-1"}}, "data": message{"n": 3}, "idempotency_key": "order-7"}, nil)
		k4 := send(c, message{"audience": message{"device_ids": []string{"phone-1"}}, "data": message{"n": 4}, "idempotency_key": "order-8"}, nil)
		if k1 != k2 || k1 != k3 || k4 == k1 {
			t.Errorf("idempotency: order-7 gave %s %s %s, order-8 %s", k1, k2, k3, k4)
		}
		if k1 != ledger.DeterministicID("idempotency", A.appID, "order-7") {
			t.Errorf("idempotent id %s is not derived from the key", k1)
		}
		sentIDs = slices.Compact(sentIDs)

		// Other audiences, and a scheduled message.
		send(c, message{"audience": message{"tags": message{"all_of": []string{"vip"}, "none_of": []string{"muted"}}}, "notification": notif("VIP")}, nil)
		send(c, message{"audience": message{"tags": message{"any_of": []string{"eu", "us"}}}, "notification": notif("Region")}, nil)
		send(c, message{"audience": message{"broadcast": true}, "data": []int{1, 2, 3}}, nil)
		later := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		sched := send(c, message{"audience": message{"device_ids": []string{"phone-2"}}, "notification": notif("Later"), "send_at": later.Format(time.RFC3339)}, nil)
		if st := status(c, &A, sched); st.State != "scheduled" || st.SendAt == nil || !st.SendAt.Equal(later) || !st.ExpiresAt.Equal(later.Add(24*time.Hour)) {
			t.Errorf("scheduled status %+v", st)
		}

		// A batch of two.
		var acc api.AcceptedResponse
		c.ok(req{method: "POST", path: "/v1/messages", app: &A, body: message{"messages": []message{
			{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("b0")},
			{"audience": message{"aliases": []string{"alice"}}, "notification": notif("b1"), "priority": "normal"},
		}}}, 202, &acc)
		if len(acc.MessageIDs) != 2 || acc.MessageIDs[0] == acc.MessageIDs[1] {
			t.Fatalf("batch of 2: %v", acc.MessageIDs)
		}
		sentIDs = append(sentIDs, acc.MessageIDs...)
		for _, id := range acc.MessageIDs {
			if st := status(c, &A, id); st.ID != id {
				t.Errorf("batch message %s: %+v", id, st)
			}
		}
		// A batch of one is a batch.
		c.ok(req{method: "POST", path: "/v1/messages", app: &A, body: message{"messages": []message{
			{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("b")},
		}}}, 202, &acc)
		sentIDs = append(sentIDs, acc.MessageIDs...)
	})

	t.Run("message errors", func(t *testing.T) {
		c := c.with(t)
		ok := message{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("fine")}

		// 1001 messages: batch-too-large, nothing recorded.
		big := make([]message, 1001)
		for i := range big {
			big[i] = ok
		}
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"messages": big}, specInvalid: true}, 413, api.SlugBatchTooLarge)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"messages": []message{}}, specInvalid: true}, 422, api.SlugInvalidRequest)

		// Title + body + data over 4096 bytes; each alone is within the spec.
		huge := message{"audience": message{"device_ids": []string{"phone-1"}},
			"notification": message{"title": strings.Repeat("t", 2000), "body": strings.Repeat("b", 2000)},
			"data":         message{"blob": strings.Repeat("d", 200)}}
		p := c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: huge}, 413, api.SlugPayloadTooLarge)
		if len(p.problem.Errors) != 1 || p.problem.Errors[0].Pointer != "" {
			t.Errorf("single message: errors %+v, want one with pointer \"\"", p.problem.Errors)
		}
		p = c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"messages": []message{ok, huge}}}, 413, api.SlugPayloadTooLarge)
		if len(p.problem.Errors) != 1 || p.problem.Errors[0].Pointer != "/messages/1" {
			t.Errorf("batch: errors %+v, want one at /messages/1", p.problem.Errors)
		}
		// Exactly 4096 bytes is fine.
		send(c, message{"audience": message{"device_ids": []string{"phone-1"}},
			"notification": message{"title": strings.Repeat("t", 2048), "body": strings.Repeat("b", 2046)}, "data": json.RawMessage("42")}, nil)

		// Audiences.
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"ghost"}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"aliases": []string{"nobody"}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"stolen-1"}}, "notification": notif("x")}}, 422, api.SlugBlacklisted)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"aliases": []string{"mallory"}}, "notification": notif("x")}}, 422, api.SlugBlacklisted)
		// An alias whose only device is blacklisted resolves to nothing.
		c.ok(req{method: "PUT", path: "/v1/devices/stolen-1/alias", app: &A, body: message{"alias": "eve"}}, 200, nil)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"aliases": []string{"eve"}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{}, "notification": notif("x")}, specInvalid: true}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-1"}, "broadcast": true}, "notification": notif("x")}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-1"}}}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-1"}}, "data": 1, "priority": "urgent"}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-1"}}, "data": 1, "ttl": 30 * 24 * 3600}, specInvalid: true}, 422, api.SlugInvalidRequest)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-1"}}, "data": 1, "idempotency_key": strings.Repeat("k", 256)}, specInvalid: true}, 422, api.SlugInvalidRequest)

		// A batch is validated whole: the second message's empty audience
		// rejects the batch, and the first is not recorded.
		p = c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"messages": []message{
			{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("x"), "idempotency_key": "batch-rejected"},
			{"audience": message{"device_ids": []string{"ghost"}}, "notification": notif("y")},
		}}}, 422, api.SlugEmptyAudience)
		if len(p.problem.Errors) != 1 || p.problem.Errors[0].Pointer != "/messages/1" {
			t.Errorf("batch: errors %+v, want one at /messages/1", p.problem.Errors)
		}
		c.fails(req{method: "GET", path: "/v1/messages/" + ledger.DeterministicID("idempotency", A.appID, "batch-rejected"), app: &A}, 404, api.SlugNotFound)

		// Malformed bodies.
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: `{"audience":`, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: `[1,2]`, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-1"}}, "data": 1, "colour": "red"}, specInvalid: true}, 400, api.SlugMalformedJSON)
		// (kin-openapi's JSON decoder ignores trailing data: the spec cannot tell.)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: `{"audience":{"device_ids":["phone-1"]},"data":1} {}`, anySpec: true}, 400, api.SlugMalformedJSON)

		// Not found.
		c.fails(req{method: "GET", path: "/v1/messages/" + uuid.NewString(), app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/v1/messages/" + uuid.NewString() + "/events", app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/v1/messages/not-a-uuid", app: &A, anySpec: true}, 404, api.SlugNotFound)
	})

	t.Run("listing", func(t *testing.T) {
		c := c.with(t)
		want := len(sentIDs)
		var all []projections.MessageStatus
		eventually(t, 15*time.Second, "listing shows every message", func() bool {
			all = nil
			tok := ""
			for range 100 {
				q := url.Values{"limit": {"3"}}
				if tok != "" {
					q.Set("page_token", tok)
				}
				var page struct {
					Messages      []projections.MessageStatus `json:"messages"`
					NextPageToken string                      `json:"next_page_token"`
				}
				c.ok(req{method: "GET", path: "/v1/messages?" + q.Encode(), app: &A}, 200, &page)
				if len(page.Messages) > 3 {
					t.Fatalf("page of %d with limit 3", len(page.Messages))
				}
				all = append(all, page.Messages...)
				if tok = page.NextPageToken; tok == "" {
					break
				}
			}
			return len(all) == want
		})
		seen := map[string]bool{}
		for i, m := range all {
			if seen[m.ID] {
				t.Errorf("message %s listed twice", m.ID)
			}
			seen[m.ID] = true
			if m.AppID != A.appID {
				t.Errorf("listing of A shows a message of %s", m.AppID)
			}
			if i > 0 && m.AcceptedAt.After(all[i-1].AcceptedAt) {
				t.Errorf("listing not newest first at %d", i)
			}
		}
		for _, id := range sentIDs {
			if !seen[id] {
				t.Errorf("message %s not listed", id)
			}
		}

		var page struct {
			Messages      []projections.MessageStatus `json:"messages"`
			NextPageToken string                      `json:"next_page_token"`
		}
		c.ok(req{method: "GET", path: "/v1/messages?status=scheduled", app: &A}, 200, &page)
		if len(page.Messages) != 1 || page.Messages[0].State != "scheduled" || page.NextPageToken != "" {
			t.Errorf("scheduled listing %+v", page)
		}
		future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		c.ok(req{method: "GET", path: "/v1/messages?" + url.Values{"since": {future}}.Encode(), app: &A}, 200, &page)
		if len(page.Messages) != 0 {
			t.Errorf("since the future: %d messages", len(page.Messages))
		}
		c.ok(req{method: "GET", path: "/v1/messages?" + url.Values{"since": {past}, "until": {future}, "limit": {"1000"}}.Encode(), app: &A}, 200, &page)
		if len(page.Messages) != want {
			t.Errorf("since an hour ago: %d messages, want %d", len(page.Messages), want)
		}

		c.fails(req{method: "GET", path: "/v1/messages?status=lost", app: &A, specInvalid: true}, 400, api.SlugInvalidRequest)
		c.fails(req{method: "GET", path: "/v1/messages?limit=0", app: &A, specInvalid: true}, 400, api.SlugInvalidRequest)
		c.fails(req{method: "GET", path: "/v1/messages?limit=1001", app: &A, specInvalid: true}, 400, api.SlugInvalidRequest)
		c.fails(req{method: "GET", path: "/v1/messages?since=yesterday", app: &A, specInvalid: true}, 400, api.SlugInvalidRequest)
		c.fails(req{method: "GET", path: "/v1/messages?page_token=%21%21", app: &A}, 400, api.SlugBadPageToken)
	})

	// --- Authentication -----------------------------------------------------
	t.Run("delivery", func(t *testing.T) {
		c := c.with(t)
		// Cancel a scheduled message before it fires.
		later := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		sched := send(c, message{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("Later"), "send_at": later.Format(time.RFC3339)}, nil)
		var st projections.MessageStatus
		c.ok(req{method: "POST", path: "/v1/messages/" + sched + "/cancel", app: &A, body: message{"reason": "withdrawn"}}, 202, &st)
		if st.State != "cancelled" || st.ID != sched {
			t.Errorf("cancelled status %+v", st)
		}
		c.fails(req{method: "POST", path: "/v1/messages/" + sched + "/cancel", app: &A}, 409, api.SlugInvalidTransition)
		c.fails(req{method: "POST", path: "/v1/messages/" + first + "/cancel", app: &A}, 409, api.SlugInvalidTransition)
		c.fails(req{method: "POST", path: "/v1/messages/" + uuid.NewString() + "/cancel", app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/messages/" + first + "/cancel", app: &B}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/messages/" + sched + "/cancel", app: &A, body: `{"reason":`, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "POST", path: "/v1/messages/" + sched + "/cancel", app: &A, body: message{"reason": strings.Repeat("r", 201)}, specInvalid: true}, 422, api.SlugInvalidRequest)

		// Resend a sent message: a new cycle, same message id.
		c.ok(req{method: "POST", path: "/v1/messages/" + first + "/resend", app: &A, body: message{"reason": "asked again"}}, 202, &st)
		eventually(t, 15*time.Second, "resent", func() bool {
			st := status(c, &A, first)
			return st.State == "sent" && st.Attempt == 2
		})
		var hist struct {
			Events []api.MessageEvent `json:"events"`
		}
		c.ok(req{method: "GET", path: "/v1/messages/" + first + "/events", app: &A}, 200, &hist)
		var types []string
		for _, e := range hist.Events {
			types = append(types, strings.TrimPrefix(strings.TrimSuffix(e.Type, ".v1"), "message."))
		}
		if got := strings.Join(types, " "); got != "accepted sending sent resend_requested sending sent" {
			t.Errorf("history after resend: %s", got)
		}
		p := c.fails(req{method: "POST", path: "/v1/messages/" + sched + "/resend", app: &A}, 409, api.SlugResendNotAllowed)
		if !strings.Contains(p.problem.Detail, "cancelled") {
			t.Errorf("resend of a cancelled message: detail %q", p.problem.Detail)
		}
		c.fails(req{method: "POST", path: "/v1/messages/" + uuid.NewString() + "/resend", app: &A}, 404, api.SlugNotFound)

		// What happened on one device: nothing acknowledged yet, then a
		// batch of acknowledgements recorded as the gateway does.
		var dd api.DeviceDelivery
		c.ok(req{method: "GET", path: "/v1/messages/" + first + "/devices/phone-1", app: &A}, 200, &dd)
		if !dd.Targeted || dd.DeliveredAt != nil || dd.MessageID != first {
			t.Errorf("device delivery before any ack %+v", dd)
		}
		if _, _, err := c.in.Commands.Message(context.Background(), first, msgdomain.RecordDeliveries{DeviceIDs: []string{"phone-1"}, Channel: "gateway"}); err != nil {
			t.Fatal(err)
		}
		c.ok(req{method: "GET", path: "/v1/messages/" + first + "/devices/phone-1", app: &A}, 200, &dd)
		if dd.DeliveredAt == nil || dd.OpenedAt != nil {
			t.Errorf("device delivery after the ack %+v", dd)
		}
		c.ok(req{method: "GET", path: "/v1/messages/" + first + "/devices/stolen-1", app: &A}, 200, &dd)
		if dd.Targeted || dd.DeliveredAt != nil {
			t.Errorf("a device the message was not for: %+v", dd)
		}
		c.fails(req{method: "GET", path: "/v1/messages/" + first + "/devices/phone-1", app: &B}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/v1/messages/" + uuid.NewString() + "/devices/phone-1", app: &A}, 404, api.SlugNotFound)

		// The app's delivery policy: defaults, a change, a refusal, a reset.
		var pv api.PolicyView
		path := "/admin/v1/apps/" + A.appID + "/policy"
		c.ok(req{method: "GET", path: path, admin: admin}, 200, &pv)
		if pv.AppID != A.appID || string(pv.Custom) != "null" || pv.Effective.MaxAttempts != 6 {
			t.Errorf("default policy view %+v", pv)
		}
		custom := message{"max_attempts": 4, "channels": message{"webhook": message{"retry": message{"max_attempts": 4, "initial_ns": 2e9, "max_ns": 6e10, "multiplier": 2, "jitter": 0.2}}}}
		c.ok(req{method: "PUT", path: path, admin: admin, body: custom}, 200, &pv)
		if pv.Effective.MaxAttempts != 4 || pv.Effective.Channel("webhook").Retry.Initial != 2*time.Second || pv.Effective.MaxResends != 3 {
			t.Errorf("policy after PUT %+v", pv.Effective)
		}
		p = c.fails(req{method: "PUT", path: path, admin: admin, body: message{"max_attempts": 0, "failover": message{"prior": 0}}, specInvalid: true}, 422, api.SlugInvalidPolicy)
		var ptrs []string
		for _, f := range p.problem.Errors {
			ptrs = append(ptrs, f.Pointer)
		}
		if strings.Join(ptrs, " ") != "/max_attempts /failover/prior" {
			t.Errorf("invalid policy pointers %v (%s)", ptrs, p.problem.Detail)
		}
		c.fails(req{method: "PUT", path: path, admin: admin, body: message{"max_attempts": 3, "colour": "red"}, specInvalid: true}, 422, api.SlugInvalidPolicy)
		c.fails(req{method: "PUT", path: path, admin: admin, body: `{"max_attempts":`, specInvalid: true}, 400, api.SlugMalformedJSON)
		c.fails(req{method: "PUT", path: "/admin/v1/apps/nosuchapp/policy", admin: admin, body: custom}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/admin/v1/apps/nosuchapp/policy", admin: admin}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: path}, 401, api.SlugUnauthorized)
		c.ok(req{method: "GET", path: path, admin: admin}, 200, &pv)
		if pv.Effective.MaxAttempts != 4 {
			t.Errorf("a refused PUT changed the policy: %+v", pv.Effective)
		}
		c.ok(req{method: "DELETE", path: path, admin: admin}, 200, &pv)
		if string(pv.Custom) != "null" || pv.Effective.MaxAttempts != 6 {
			t.Errorf("policy after DELETE %+v", pv)
		}
		c.fails(req{method: "DELETE", path: "/admin/v1/apps/nosuchapp/policy", admin: admin}, 404, api.SlugNotFound)
	})

	t.Run("authentication", func(t *testing.T) {
		c := c.with(t)
		body := []byte(`{"audience":{"device_ids":["phone-1"]},"notification":{"title":"a","body":"b"}}`)
		signAt := func(key, secret string, at time.Time, nonce string) func(*http.Request, []byte) {
			return func(r *http.Request, b []byte) {
				if err := signing.SignRequest(r, key, []byte(secret), at, nonce, b); err != nil {
					t.Fatal(err)
				}
			}
		}
		post := func(sign func(*http.Request, []byte)) req {
			return req{method: "POST", path: "/v1/messages", body: body, sign: sign}
		}

		c.fails(post(signAt(A.key, "sk_not-the-secret", time.Now(), signing.NewNonce())), 401, api.SlugBadSignature)
		c.fails(post(signAt(A.key, A.secret, time.Now().Add(-10*time.Minute), signing.NewNonce())), 401, api.SlugStaleTimestamp)
		c.fails(post(signAt(A.key, A.secret, time.Now().Add(10*time.Minute), signing.NewNonce())), 401, api.SlugStaleTimestamp)
		c.fails(post(signAt("pk_nosuchapp", A.secret, time.Now(), signing.NewNonce())), 401, api.SlugUnknownApp)
		c.fails(post(func(*http.Request, []byte) {}), 401, api.SlugMissingCreds)
		c.fails(post(signAt(A.key, A.secret, time.Now(), "short")), 401, api.SlugMalformedCreds)
		// A signature over another body.
		c.fails(post(func(r *http.Request, _ []byte) {
			_ = signing.SignRequest(r, A.key, []byte(A.secret), time.Now(), signing.NewNonce(), []byte(`{}`))
		}), 401, api.SlugBadSignature)

		// The same signed request twice: the replay is rejected. Signed by
		// hand with signing.Sign to show the headers.
		ts := time.Now().Unix()
		nonce := signing.NewNonce()
		sig := signing.Sign([]byte(A.secret), "GET", "/v1/messages", "limit=1", ts, nonce, nil)
		replay := func(*http.Request, []byte) {}
		hdr := map[string]string{signing.HeaderAppKey: A.key, signing.HeaderTimestamp: fmt.Sprint(ts), signing.HeaderNonce: nonce, signing.HeaderSignature: sig}
		c.ok(req{method: "GET", path: "/v1/messages?limit=1", header: hdr, sign: replay}, 200, nil)
		c.fails(req{method: "GET", path: "/v1/messages?limit=1", header: hdr, sign: replay}, 401, api.SlugReplayedNonce)
		// The signature covers the query.
		c.fails(req{method: "GET", path: "/v1/messages?limit=2", header: map[string]string{signing.HeaderAppKey: A.key,
			signing.HeaderTimestamp: fmt.Sprint(ts), signing.HeaderNonce: signing.NewNonce(), signing.HeaderSignature: sig}, sign: replay}, 401, api.SlugBadSignature)

		// Each signed route rejects unsigned requests.
		for _, r := range []req{
			{method: "GET", path: "/v1/messages/" + first},
			{method: "GET", path: "/v1/messages/" + first + "/events"},
			{method: "PUT", path: "/v1/devices/phone-1", body: message{"platform": "ios"}},
			{method: "GET", path: "/v1/devices/phone-1"},
			{method: "PUT", path: "/v1/devices/phone-1/alias", body: message{"alias": "x"}},
			{method: "DELETE", path: "/v1/devices/phone-1/alias"},
			{method: "POST", path: "/v1/devices/phone-1/tags", body: message{"add": []string{"x"}}},
			{method: "POST", path: "/v1/devices/phone-1/logout"},
		} {
			c.fails(r, 401, api.SlugMissingCreds)
		}
		// Admin routes reject unsigned and signed-but-no-token requests alike.
		for _, r := range []req{
			{method: "GET", path: "/admin/v1/apps/" + A.appID},
			{method: "PUT", path: "/admin/v1/apps/" + A.appID + "/channels/x", body: message{"enabled": true, "priority": 1}},
			{method: "DELETE", path: "/admin/v1/apps/" + A.appID + "/channels/webhook"},
			{method: "POST", path: "/admin/v1/apps/" + A.appID + "/blacklist", body: message{"kind": "user", "add": []string{"x"}}},
			{method: "GET", path: "/admin/v1/apps", app: &A},
		} {
			c.fails(r, 401, api.SlugUnauthorized)
		}
	})

	// --- Isolation between apps ---------------------------------------------
	t.Run("isolation", func(t *testing.T) {
		c := c.with(t)
		// B cannot read A's messages.
		c.fails(req{method: "GET", path: "/v1/messages/" + first, app: &B}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/v1/messages/" + first + "/events", app: &B}, 404, api.SlugNotFound)
		var page struct {
			Messages []projections.MessageStatus `json:"messages"`
		}
		c.ok(req{method: "GET", path: "/v1/messages", app: &B}, 200, &page)
		if len(page.Messages) != 0 {
			t.Errorf("B lists %d messages of A", len(page.Messages))
		}
		// A's idempotency keys are A's: the same key gives B its own message
		// (once B has a device).
		// B's devices are B's: A's ids are unknown to B.
		c.fails(req{method: "GET", path: "/v1/devices/phone-1", app: &B}, 404, api.SlugNotFound)
		c.fails(req{method: "PUT", path: "/v1/devices/phone-1/alias", app: &B, body: message{"alias": "bob"}}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/devices/phone-1/tags", app: &B, body: message{"add": []string{"x"}}}, 404, api.SlugNotFound)
		c.fails(req{method: "DELETE", path: "/v1/devices/phone-1/alias", app: &B}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/devices/phone-1/logout", app: &B}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/devices/phone-1/credential", app: &B}, 404, api.SlugNotFound)
		// B sending to A's devices, users or tags: nobody.
		c.fails(req{method: "POST", path: "/v1/messages", app: &B, body: message{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &B, body: message{"audience": message{"aliases": []string{"alice"}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &B, body: message{"audience": message{"tags": message{"any_of": []string{"vip"}}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.fails(req{method: "POST", path: "/v1/messages", app: &B, body: message{"audience": message{"broadcast": true}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		// A's blacklist does not apply to B.

		// B registers a device with the id of A's: a device of B's.
		var bd, ad projections.DeviceView
		c.ok(req{method: "PUT", path: "/v1/devices/phone-1", app: &B, body: message{"platform": "ios", "tokens": message{"apns": "b-tok"}}}, 200, &bd)
		c.ok(req{method: "PUT", path: "/v1/devices/phone-1/alias", app: &B, body: message{"alias": "bob"}}, 200, &bd)
		c.ok(req{method: "POST", path: "/v1/devices/phone-1/tags", app: &B, body: message{"add": []string{"b-only"}}}, 200, &bd)
		if bd.AppID != B.appID || bd.Profile.Platform != "ios" || bd.Alias != "bob" || !slices.Equal(bd.Tags, []string{"b-only"}) {
			t.Errorf("B's phone-1 %+v", bd)
		}
		c.ok(req{method: "GET", path: "/v1/devices/phone-1", app: &A}, 200, &ad)
		if ad.AppID != A.appID || ad.Profile.Platform != "android" || ad.Alias != "alice" || !slices.Equal(ad.Tags, []string{"eu", "vip"}) || !ad.Active {
			t.Errorf("A's phone-1 changed by B: %+v", ad)
		}
		// B's message to its phone-1 reaches one device, B's.
		var acc api.AcceptedResponse
		c.ok(req{method: "POST", path: "/v1/messages", app: &B, body: message{"audience": message{"device_ids": []string{"phone-1"}}, "notification": notif("b"), "idempotency_key": "order-7"}}, 202, &acc)
		if acc.MessageIDs[0] == ledger.DeterministicID("idempotency", A.appID, "order-7") {
			t.Error("B's idempotency key order-7 returned A's message")
		}
		bst := status(c, &B, acc.MessageIDs[0])
		if bst.AppID != B.appID || bst.TargetCount != 1 {
			t.Errorf("B's message %+v", bst)
		}
		c.fails(req{method: "GET", path: "/v1/messages/" + acc.MessageIDs[0], app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "GET", path: "/v1/messages/" + acc.MessageIDs[0] + "/events", app: &A}, 404, api.SlugNotFound)
		// B logs its phone-1 out; A's stays active.
		c.ok(req{method: "POST", path: "/v1/devices/phone-1/logout", app: &B}, 204, nil)
		c.ok(req{method: "GET", path: "/v1/devices/phone-1", app: &A}, 200, &ad)
		if !ad.Active || ad.Alias != "alice" {
			t.Errorf("A's phone-1 after B's logout: %+v", ad)
		}
		c.ok(req{method: "GET", path: "/v1/devices/phone-1", app: &B}, 200, &bd)
		if bd.Active || bd.Alias != "" {
			t.Errorf("B's phone-1 after logout: %+v", bd)
		}
	})

	// --- Logout -------------------------------------------------------------
	t.Run("logout", func(t *testing.T) {
		c := c.with(t)
		c.ok(req{method: "POST", path: "/v1/devices/phone-2/logout", app: &A}, 204, nil)
		var d projections.DeviceView
		c.ok(req{method: "GET", path: "/v1/devices/phone-2", app: &A}, 200, &d)
		if d.Active || !slices.Equal(d.Tags, []string{"muted", "vip"}) {
			t.Errorf("logged out %+v, want inactive with its tags", d)
		}
		c.fails(req{method: "POST", path: "/v1/devices/phone-2/logout", app: &A}, 404, api.SlugNotFound)
		c.fails(req{method: "POST", path: "/v1/devices/phone-2/credential", app: &A}, 409, api.SlugInvalidTransition)
		c.fails(req{method: "POST", path: "/v1/messages", app: &A, body: message{"audience": message{"device_ids": []string{"phone-2"}}, "notification": notif("x")}}, 422, api.SlugEmptyAudience)
		c.ok(req{method: "PUT", path: "/v1/devices/phone-2", app: &A, body: message{"platform": "ios"}}, 200, &d)
		if !d.Active {
			t.Errorf("registered again: %+v", d)
		}
		c.ok(req{method: "DELETE", path: "/v1/devices/phone-1/alias", app: &A}, 200, &d)
		if d.Alias != "" {
			t.Errorf("alias %q after unbinding", d.Alias)
		}
	})

	// --- Coverage -----------------------------------------------------------
	t.Run("coverage", func(t *testing.T) {
		specOps := map[string]bool{}
		for path, item := range c.doc.Paths.Map() {
			for method := range item.Operations() {
				specOps[method+" "+path] = true
			}
		}
		// Every route of the Echo server is in the spec, and nothing else.
		e, ok := in.API.Handler().(*echo.Echo)
		if !ok {
			t.Fatalf("API handler is %T, not *echo.Echo", in.API.Handler())
		}
		echoOps := map[string]bool{}
		for _, r := range e.Routes() {
			if r.Method == echo.RouteNotFound {
				continue
			}
			parts := strings.Split(r.Path, "/")
			for i, p := range parts {
				if strings.HasPrefix(p, ":") {
					parts[i] = "{" + p[1:] + "}"
				}
			}
			echoOps[r.Method+" "+strings.Join(parts, "/")] = true
		}
		for op := range echoOps {
			if !specOps[op] {
				t.Errorf("route %s is served but not in schema/openapi.yaml", op)
			}
		}
		for op := range specOps {
			if !echoOps[op] {
				t.Errorf("operation %s is in schema/openapi.yaml but not served", op)
			}
		}
		// Every operation was exercised with a successful answer.
		for _, op := range slices.Sorted(maps.Keys(specOps)) {
			ok := false
			for st := range c.covered[op] {
				ok = ok || st < 300
			}
			if !ok {
				t.Errorf("operation %s: no successful call (statuses %v)", op, slices.Sorted(maps.Keys(c.covered[op])))
			}
		}
		// The error cases the scenario asserts.
		for _, slug := range []string{
			api.SlugPayloadTooLarge, api.SlugMalformedJSON, api.SlugInvalidRequest, api.SlugUnknownApp, api.SlugBadSignature,
			api.SlugStaleTimestamp, api.SlugReplayedNonce, api.SlugMissingCreds, api.SlugMalformedCreds, api.SlugBlacklisted,
			api.SlugEmptyAudience, api.SlugNotFound, api.SlugBatchTooLarge, api.SlugUnauthorized, api.SlugBadPageToken,
		} {
			if !c.problems[slug] {
				t.Errorf("problem %s never answered", slug)
			}
		}
		var lines []string
		for _, op := range slices.Sorted(maps.Keys(c.covered)) {
			lines = append(lines, fmt.Sprintf("%-48s %v", op, slices.Sorted(maps.Keys(c.covered[op]))))
		}
		t.Logf("operations and statuses exercised:\n%s", strings.Join(lines, "\n"))
	})
}

// TestContractProblemSlugsDocumented checks that the Problem schema lists
// every slug of api/problem.go, and nothing else.
func TestContractProblemSlugsDocumented(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(schema.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	p := doc.Components.Schemas["Problem"]
	if p == nil || p.Value == nil || p.Value.Properties["type"] == nil {
		t.Fatal("no Problem schema with a type property")
	}
	var enum []string
	for _, v := range p.Value.Properties["type"].Value.Enum {
		enum = append(enum, strings.TrimPrefix(fmt.Sprint(v), api.ProblemBase))
	}
	sort.Strings(enum)
	want := []string{
		api.SlugPayloadTooLarge, api.SlugMalformedJSON, api.SlugInvalidRequest, api.SlugUnknownApp, api.SlugBadSignature,
		api.SlugStaleTimestamp, api.SlugReplayedNonce, api.SlugMissingCreds, api.SlugMalformedCreds, api.SlugBlacklisted,
		api.SlugEmptyAudience, api.SlugNotFound, api.SlugConflict, api.SlugInvalidTransition, api.SlugBatchTooLarge,
		api.SlugUnauthorized, api.SlugInternal, api.SlugUnavailable, api.SlugMethodNotAllowed, api.SlugBadPageToken,
		api.SlugResendNotAllowed, api.SlugInvalidPolicy,
	}
	sort.Strings(want)
	if !slices.Equal(enum, want) {
		t.Errorf("Problem.type enum %v\nwant (api/problem.go) %v", enum, want)
	}
	for _, slug := range want {
		if !strings.Contains(p.Value.Description, "`"+slug+"`") {
			t.Errorf("Problem description does not list %s", slug)
		}
	}
}

// with returns c reporting to a subtest.
func (c *contract) with(t *testing.T) *contract {
	d := *c
	d.t = t
	return &d
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

// setup creates an app and one device d1 of it.
func setup(t *testing.T, c *contract, name string) creds {
	t.Helper()
	var a api.CreatedApp
	c.ok(req{method: "POST", path: "/admin/v1/apps", admin: c.in.AdminToken, body: message{"name": name}}, 201, &a)
	cr := creds{a.AppID, a.AppKey, a.AppSecret}
	c.ok(req{method: "PUT", path: "/v1/devices/d1", app: &cr, body: message{"platform": "ios"}}, 200, nil)
	return cr
}

// TestContractIdempotencyWindow: a repeated idempotency key returns the
// original message within 24 hours, and makes a new message after.
func TestContractIdempotencyWindow(t *testing.T) {
	var mu sync.Mutex
	skew := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }
	in := bootPlatform(t, now)
	c := newContract(t, in)
	A := setup(t, c, "idem")
	send := func() string {
		var out api.AcceptedResponse
		c.ok(req{method: "POST", path: "/v1/messages", app: &A, header: map[string]string{"Idempotency-Key": "k-1"},
			body: message{"audience": message{"device_ids": []string{"d1"}}, "data": message{"x": 1}}}, 202, &out)
		return out.MessageIDs[0]
	}
	first := send()
	mu.Lock()
	skew = 23 * time.Hour
	mu.Unlock()
	if again := send(); again != first {
		t.Errorf("after 23 h the key gave %s, want the original %s", again, first)
	}
	mu.Lock()
	skew = 25 * time.Hour
	mu.Unlock()
	third := send()
	if third == first {
		t.Error("after 25 h the key still returns the original message")
	}
	var st projections.MessageStatus
	c.ok(req{method: "GET", path: "/v1/messages/" + third, app: &A}, 200, &st)
	if st.ID != third {
		t.Errorf("new message %+v", st)
	}
	if again := send(); again != third {
		t.Errorf("the key now gives %s, want %s", again, third)
	}
}

// TestContractIdempotentRepeatOfScheduled: repeating the key of a scheduled
// message with another body returns the original id.
func TestContractIdempotentRepeatOfScheduled(t *testing.T) {
	in := bootPlatform(t, nil)
	c := newContract(t, in)
	A := setup(t, c, "idem-scheduled")
	later := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	var a, b api.AcceptedResponse
	c.ok(req{method: "POST", path: "/v1/messages", app: &A, header: map[string]string{"Idempotency-Key": "k-2"},
		body: message{"audience": message{"device_ids": []string{"d1"}}, "data": message{"x": 1}, "send_at": later}}, 202, &a)
	c.ok(req{method: "POST", path: "/v1/messages", app: &A, header: map[string]string{"Idempotency-Key": "k-2"},
		body: message{"audience": message{"device_ids": []string{"d1"}}, "data": message{"x": 1}}}, 202, &b) // today: 500 internal
	if a.MessageIDs[0] != b.MessageIDs[0] {
		t.Errorf("repeat gave %s, want %s", b.MessageIDs[0], a.MessageIDs[0])
	}
}

// TestContractBatchIsAtomic: "a batch is accepted whole or not at all".
func TestContractBatchIsAtomic(t *testing.T) {
	in := bootPlatform(t, nil)
	c := newContract(t, in)
	A := setup(t, c, "atomic")
	far := time.Now().Add(40 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for name, bad := range map[string]message{
		"send_at 40 days ahead":         {"audience": message{"device_ids": []string{"d1"}}, "notification": notif("y"), "send_at": far},
		"negative ttl":                  {"audience": message{"device_ids": []string{"d1"}}, "notification": notif("y"), "ttl": -1},
		"priority urgent":               {"audience": message{"device_ids": []string{"d1"}}, "notification": notif("y"), "priority": "urgent"},
		"neither notification nor data": {"audience": message{"device_ids": []string{"d1"}}},
	} {
		key := "atomic-" + strings.ReplaceAll(name, " ", "-")
		p := c.do(req{method: "POST", path: "/v1/messages", app: &A, anySpec: true, body: message{"messages": []message{
			{"audience": message{"device_ids": []string{"d1"}}, "notification": notif("x"), "idempotency_key": key}, bad,
		}}})
		if p.status != 422 || p.problem.Type != api.ProblemBase+api.SlugInvalidRequest {
			t.Errorf("%s: %s, want 422 invalid-request", name, p)
		}
		if len(p.problem.Errors) != 1 || p.problem.Errors[0].Pointer != "/messages/1" {
			t.Errorf("%s: errors %+v, want one pointing at /messages/1", name, p.problem.Errors)
		}
		if got := c.do(req{method: "GET", path: "/v1/messages/" + ledger.DeterministicID("idempotency", A.appID, key), app: &A}); got.status != 404 {
			t.Errorf("%s: the rejected batch's message 0 was recorded: %s", name, got)
		}
	}
}

// TestContractSchemasMatchGoTypes: every schema of a Go type has exactly the
// type's JSON fields, and requires exactly those without omitempty.
func TestContractSchemasMatchGoTypes(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(schema.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]any{
		"MessageRequest":   api.MessageRequest{},
		"BatchRequest":     api.BatchRequest{},
		"AcceptedResponse": api.AcceptedResponse{},
		"Audience":         msgdomain.Audience{},
		"TagExpr":          msgdomain.TagExpr{},
		"Notification":     msgdomain.Notification{},
		"MessageStatus":    projections.MessageStatus{},
		"ChannelCounts":    projections.ChannelCounts{},
		"MessageEvent":     api.MessageEvent{},
		"DeviceProfile":    api.DeviceRequest{},
		"DeviceView":       projections.DeviceView{},
		"CreateAppRequest": api.CreateAppRequest{},
		"CreatedApp":       api.CreatedApp{},
		"AppView":          api.AppView{},
		"ChannelConfig":    appdomain.ChannelConfig{},
		"Problem":          api.Problem{},
		"ProblemField":     api.ProblemField{},
		"ReasonRequest":    api.ReasonRequest{},
		"DeviceCredential": api.DeviceCredential{},
		"DeviceDelivery":   api.DeviceDelivery{},
		"PolicyView":       api.PolicyView{},
		"DeliveryPolicy":   policy.Config{},
		"ChannelPolicy":    policy.ChannelPolicy{},
		"RetryPolicy":      policy.RetryPolicy{},
		"FailoverPolicy":   policy.FailoverPolicy{},
	} {
		ref := doc.Components.Schemas[name]
		if ref == nil || ref.Value == nil {
			t.Errorf("no schema %s", name)
			continue
		}
		var fields, required []string
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			tag := typ.Field(i).Tag.Get("json")
			fname, opts, _ := strings.Cut(tag, ",")
			if fname == "-" || !typ.Field(i).IsExported() {
				continue
			}
			if fname == "" {
				fname = typ.Field(i).Name
			}
			fields = append(fields, fname)
			if !strings.Contains(opts, "omitempty") {
				required = append(required, fname)
			}
		}
		props := slices.Sorted(maps.Keys(ref.Value.Properties))
		sort.Strings(fields)
		sort.Strings(required)
		req := slices.Clone(ref.Value.Required)
		sort.Strings(req)
		if !slices.Equal(props, fields) {
			t.Errorf("schema %s has properties %v; %s has JSON fields %v", name, props, typ, fields)
		}
		// A delivery policy is read onto the defaults: a PUT may leave out
		// any field, so its schemas require none.
		partial := strings.HasSuffix(name, "Policy")
		if partial && len(req) > 0 {
			t.Errorf("schema %s requires %v; policies are partial", name, req)
		}
		if !partial && !slices.Equal(req, required) {
			t.Errorf("schema %s requires %v; %s has without omitempty %v", name, req, typ, required)
		}
		if ap := ref.Value.AdditionalProperties.Has; ap == nil || *ap {
			t.Errorf("schema %s does not set additionalProperties: false", name)
		}
	}
}
