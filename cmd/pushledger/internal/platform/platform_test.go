package platform_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"

	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels/webhook"
	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/api/signing"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform/platformtest"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/projections"
)

// TestMain doubles as the server of the kill -9 test: with
// PUSHLEDGER_TEST_SERVE set to a data directory, the binary serves it and
// writes its address to stdout.
func TestMain(m *testing.M) {
	if dir := os.Getenv("PUSHLEDGER_TEST_SERVE"); dir != "" {
		serveForever(dir)
		return
	}
	code := m.Run()
	for _, f := range cleanups {
		f()
	}
	os.Exit(code)
}

// cleanups run after every test and benchmark of the package.
var cleanups []func()

func serveForever(dir string) {
	// Short timeouts, so that attempts cut by a kill are retried within
	// the test: sends time out after 1 s, lost attempts after 3 s.
	pol := platformtest.FastPolicy()
	pol.AttemptTimeout = 3 * time.Second
	p, err := platform.Open(platform.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		WebhookTimeout: time.Second, SendTimeout: time.Second, GatewayAddr: "tcp://127.0.0.1:0", Policy: func() policy.Config { return pol }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	if err := p.Run(context.Background(), ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}

type receiver struct {
	srv    *httptest.Server
	status atomic.Int32
	mu     sync.Mutex
	got    []webhook.Payload
	sigOK  []bool
	secret []byte
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.status.Store(http.StatusOK)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p webhook.Payload
		_ = json.Unmarshal(body, &p)
		r.mu.Lock()
		r.got = append(r.got, p)
		r.sigOK = append(r.sigOK, webhook.VerifySignature(r.secret, req.Header.Get(webhook.HeaderTimestamp), body, req.Header.Get(webhook.HeaderSignature)))
		r.mu.Unlock()
		w.WriteHeader(int(r.status.Load()))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func status(t *testing.T, c *client.Client, id string) projections.MessageStatus {
	t.Helper()
	var st projections.MessageStatus
	if err := c.Do(context.Background(), http.MethodGet, "/v1/messages/"+id, nil, nil, &st); err != nil {
		t.Fatalf("status %s: %v", id, err)
	}
	return st
}

func history(t *testing.T, c *client.Client, id string) []api.MessageEvent {
	t.Helper()
	var out struct {
		Events []api.MessageEvent `json:"events"`
	}
	if err := c.Do(context.Background(), http.MethodGet, "/v1/messages/"+id+"/events", nil, nil, &out); err != nil {
		t.Fatalf("history %s: %v", id, err)
	}
	return out.Events
}

func types(evs []api.MessageEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func register(t *testing.T, c *client.Client, id, alias string) {
	t.Helper()
	ctx := context.Background()
	if err := c.Do(ctx, http.MethodPut, "/v1/devices/"+id, nil, api.DeviceRequest{Platform: "android", Brand: "acme"}, nil); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	if alias != "" {
		if err := c.Do(ctx, http.MethodPut, "/v1/devices/"+id+"/alias", nil, map[string]string{"alias": alias}, nil); err != nil {
			t.Fatalf("alias %s: %v", id, err)
		}
	}
}

func send(t *testing.T, c *client.Client, r api.MessageRequest) string {
	t.Helper()
	var out api.AcceptedResponse
	if err := c.Do(context.Background(), http.MethodPost, "/v1/messages", nil, r, &out); err != nil {
		t.Fatalf("send: %v", err)
	}
	if len(out.MessageIDs) != 1 {
		t.Fatalf("send: %d ids", len(out.MessageIDs))
	}
	return out.MessageIDs[0]
}

func TestEndToEndWebhook(t *testing.T) {
	in := platformtest.Start(t, "")
	rcv := newReceiver(t)
	c, created := in.NewApp(t, "shop", rcv.srv.URL+"/push")
	rcv.secret = []byte(created.AppSecret)
	register(t, c, "phone-1", "alice")

	id := send(t, c, api.MessageRequest{Audience: message.Audience{Aliases: []string{"alice"}},
		Notification: &message.Notification{Title: "Hi", Body: "there"}, Data: json.RawMessage(`{"order":42}`)})
	platformtest.Eventually(t, 10*time.Second, "message sent", func() bool { return status(t, c, id).State == message.StateSent })

	got := types(history(t, c, id))
	want := []string{message.TypeAccepted, message.TypeSending, message.TypeSent}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("history %v, want %v", got, want)
	}
	rcv.mu.Lock()
	p, sigOK := rcv.got[0], rcv.sigOK[0]
	rcv.mu.Unlock()
	if !sigOK {
		t.Error("webhook signature did not verify with the app secret")
	}
	if p.MessageID != id || p.Title != "Hi" || p.Attempt != 1 || len(p.Targets) != 1 || p.Targets[0].DeviceID != "phone-1" || string(p.Data) != `{"order":42}` {
		t.Errorf("webhook payload %+v", p)
	}
	st := status(t, c, id)
	if st.Counts[message.StateSent] != 1 || st.Channels["webhook"].Sent != 1 || st.TargetCount != 1 {
		t.Errorf("status %+v", st)
	}

	// A failing receiver: the attempt fails with the HTTP status as reason
	// and is retried (with the same message id) until the receiver
	// recovers.
	rcv.status.Store(http.StatusServiceUnavailable)
	id2 := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"phone-1"}}, Notification: &message.Notification{Title: "x"}})
	platformtest.Eventually(t, 10*time.Second, "two failed attempts", func() bool {
		st := status(t, c, id2)
		return st.Channels["webhook"] != nil && st.Channels["webhook"].Failed >= 2
	})
	rcv.status.Store(http.StatusOK)
	platformtest.Eventually(t, 10*time.Second, "sent after retries", func() bool { return status(t, c, id2).State == message.StateSent })
	st2 := status(t, c, id2)
	if st2.Attempt < 3 || st2.Channels["webhook"].Sent != 1 {
		t.Errorf("retried status %+v", st2)
	}
	for _, e := range history(t, c, id2) {
		if e.Type == message.TypeFailed && !strings.Contains(string(e.Data), `"reason":"http_503"`) {
			t.Errorf("failed event %s", e.Data)
		}
	}
	rcv.mu.Lock()
	for _, p := range rcv.got[1:] {
		if p.MessageID != id2 {
			t.Errorf("a retry carried message id %s, want %s", p.MessageID, id2)
		}
	}
	rcv.mu.Unlock()

	// A permanent refusal fails the message finally, with the status.
	rcv.status.Store(http.StatusBadRequest)
	id3 := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"phone-1"}}, Notification: &message.Notification{Title: "x"}})
	platformtest.Eventually(t, 10*time.Second, "message failed", func() bool { return status(t, c, id3).State == message.StateFailed })
	st3 := status(t, c, id3)
	if st3.LastError != "http_400" || !st3.FinalFailure || st3.Channels["webhook"].Failed != 1 {
		t.Errorf("failed status %+v", st3)
	}
	if got := types(history(t, c, id3)); strings.Join(got, ",") != strings.Join([]string{message.TypeAccepted, message.TypeSending, message.TypeFailed}, ",") {
		t.Errorf("permanent failure history %v", got)
	}
	// With no other channel to fail over to, operators are alerted: the
	// final failed event says why.
	if h := history(t, c, id3); !strings.Contains(string(h[len(h)-1].Data), `"alert":"no_channel"`) {
		t.Errorf("final failure without alert: %s", h[len(h)-1].Data)
	}
	// The listing sees both, newest first, and filters by status.
	var list struct {
		Messages []projections.MessageStatus `json:"messages"`
	}
	platformtest.Eventually(t, 10*time.Second, "listing", func() bool {
		if err := c.Do(context.Background(), http.MethodGet, "/v1/messages", map[string][]string{"status": {"failed"}}, nil, &list); err != nil {
			t.Fatal(err)
		}
		return len(list.Messages) == 1 && list.Messages[0].ID == id3
	})
}

func TestNoChannelFailsWithReason(t *testing.T) {
	in := platformtest.Start(t, "")
	c, _ := in.NewApp(t, "nochan", "")
	register(t, c, "d1", "")
	id := send(t, c, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"d1"}}, Notification: &message.Notification{Title: "x"}})
	platformtest.Eventually(t, 10*time.Second, "failed", func() bool { return status(t, c, id).State == message.StateFailed })
	if st := status(t, c, id); st.LastError != "no_channel" {
		t.Fatalf("last error %q", st.LastError)
	}
}

func TestIdempotencyKey(t *testing.T) {
	in := platformtest.Start(t, "")
	rcv := newReceiver(t)
	c, _ := in.NewApp(t, "idem", rcv.srv.URL)
	register(t, c, "d1", "")
	r := api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"d1"}}, Notification: &message.Notification{Title: "once"}, IdempotencyKey: "order-42"}
	a, b := send(t, c, r), send(t, c, r)
	if a != b {
		t.Fatalf("same idempotency key gave two messages: %s, %s", a, b)
	}
	r.IdempotencyKey = "order-43"
	if d := send(t, c, r); d == a {
		t.Fatal("another key returned the same message")
	}
	platformtest.Eventually(t, 10*time.Second, "two webhook calls", func() bool { return rcv.count() >= 2 })
	// The webhook's answer is recorded after the call returns.
	platformtest.Eventually(t, 10*time.Second, "the repeated message sent", func() bool { return status(t, c, a).State == message.StateSent })
	if n := len(history(t, c, a)); n != 3 {
		t.Fatalf("the repeated message has %d events, want 3 (accepted, sending, sent)", n)
	}
}

// TestReplayRebuildsIdentically rebuilds every read model from position 0
// and compares the stores key by key.
func TestReplayRebuildsIdentically(t *testing.T) {
	dir := t.TempDir()
	in := platformtest.Start(t, dir)
	rcv := newReceiver(t)
	c, _ := in.NewApp(t, "replay", rcv.srv.URL)
	ctx := context.Background()
	for i := range 20 {
		register(t, c, fmt.Sprintf("d%02d", i), fmt.Sprintf("user%d", i%5))
		if i%3 == 0 {
			if err := c.Do(ctx, http.MethodPost, fmt.Sprintf("/v1/devices/d%02d/tags", i), nil, map[string][]string{"add": {"vip", "beta"}}, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/devices/d03/logout", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 30 {
		ids = append(ids, send(t, c, api.MessageRequest{Audience: message.Audience{Aliases: []string{fmt.Sprintf("user%d", i%5)}}, Notification: &message.Notification{Title: "t"}}))
	}
	platformtest.Eventually(t, 20*time.Second, "all sent and projected", func() bool {
		for _, id := range ids {
			if status(t, c, id).State != message.StateSent {
				return false
			}
		}
		last, _ := in.P.Ledger.LastPosition(ctx)
		return in.P.Messages.Position() == lastOf(t, in, "message-", last)
	})
	in.Stop(t)

	before := dump(t, dir)
	p, err := platform.Open(platform.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var progressed bool
	if err := p.Replay(ctx, func(string, uint64, uint64) { progressed = true }); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	after := dump(t, dir)
	if !progressed {
		t.Error("replay reported no progress")
	}
	if len(before) == 0 || len(before) != len(after) {
		t.Fatalf("read models: %d keys before replay, %d after", len(before), len(after))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("key %q differs after replay:\n%s\n%s", k, v, after[k])
		}
	}
}

// lastOf returns the position of the last event of a stream category at
// or before pos.
func lastOf(t *testing.T, in *platformtest.Instance, prefix string, pos uint64) uint64 {
	evs, err := in.P.Ledger.ReadAll(context.Background(), pos+1, ledger.Backwards, 1, ledgerFilter(prefix))
	if err != nil || len(evs) == 0 {
		t.Fatalf("read back: %v", err)
	}
	return evs[0].Position
}

// dump reads every key of the read-model store, checkpoints excluded
// (their values depend on where the last batch ended).
func dump(t *testing.T, dir string) map[string]string {
	t.Helper()
	p, err := platform.Open(platform.Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out := map[string]string{}
	err = p.State.Scan(nil, []byte{0xff}, false, func(k, v []byte) bool {
		if !bytes.HasPrefix(k, []byte("cp\x00")) {
			out[string(k)] = string(v)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestKill9LosesNoAcknowledgedMessage submits messages from several clients
// to a server in a child process, kills it with SIGKILL at a random moment,
// restarts it on the same data, and checks that every message whose 202 was
// received is in the ledger.
func TestKill9LosesNoAcknowledgedMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	dir := t.TempDir()
	rounds := 3
	var acked []string
	var c *client.Client
	for round := range rounds {
		url, kill := startChild(t, dir)
		if c == nil {
			c = crashApp(t, dir, url, "")
		}
		c.BaseURL = url
		// Everything acknowledged before must still be there.
		for _, id := range acked {
			if evs := history(t, c, id); len(evs) == 0 || evs[0].Type != message.TypeAccepted {
				t.Fatalf("round %d: acknowledged message %s lost", round, id)
			}
		}
		// Kill after a random number of acknowledgements.
		submitUntilKilled(t, c, 8, 50+int(time.Now().UnixNano()%200), kill, &acked)
	}
	// A request sent (and accepted) just before a crash must not be
	// replayable after the restart: its nonce was recorded.
	url, kill := startChild(t, dir)
	body := []byte(`{"audience":{"device_ids":["d1"]},"notification":{"title":"once","body":""}}`)
	replay := func(url string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/messages", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range signedHeaders {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	first, _ := http.NewRequest(http.MethodPost, url+"/v1/messages", bytes.NewReader(body))
	if err := signing.SignRequest(first, c.AppKey, []byte(c.AppSecret), time.Now(), signing.NewNonce(), body); err != nil {
		t.Fatal(err)
	}
	signedHeaders = first.Header.Clone()
	if resp := replay(url); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first send: %d", resp.StatusCode)
	}
	// So must a request that appends nothing (its nonce is synced on its
	// own, not by an append's fsync).
	path := "/v1/messages/" + acked[0]
	read, _ := http.NewRequest(http.MethodGet, url+path, nil)
	if err := signing.SignRequest(read, c.AppKey, []byte(c.AppSecret), time.Now(), signing.NewNonce(), nil); err != nil {
		t.Fatal(err)
	}
	readHeaders := read.Header.Clone()
	resend := func(url string) int {
		req, _ := http.NewRequest(http.MethodGet, url+path, nil)
		req.Header = readHeaders.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := resend(url); code != http.StatusOK {
		t.Fatalf("signed read: %d", code)
	}
	kill()
	url, _ = startChild(t, dir)
	if resp := replay(url); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replay after kill -9: status %d, want 401 replayed-nonce", resp.StatusCode)
	}
	if code := resend(url); code != http.StatusUnauthorized {
		t.Fatalf("replay of a read after kill -9: status %d, want 401 replayed-nonce", code)
	}
	c.BaseURL = url
	for _, id := range acked {
		if evs := history(t, c, id); len(evs) == 0 || evs[0].Type != message.TypeAccepted {
			t.Fatalf("acknowledged message %s lost after kill -9", id)
		}
	}
	t.Logf("%d acknowledged messages over %d kills, none lost", len(acked), rounds)
}

var signedHeaders http.Header

func startChild(t *testing.T, dir string) (url string, kill func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PUSHLEDGER_TEST_SERVE="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill = func() {
		if !killed {
			killed = true
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(kill)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		t.Fatalf("child: %q %v", line, err)
	}
	url = "http://" + strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
	platformtest.Eventually(t, 20*time.Second, "child ready", func() bool {
		resp, err := http.Get(url + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return url, kill
}

func ledgerFilter(prefix string) ledger.Filter {
	return ledger.Filter{StreamPrefixes: []string{prefix}}
}

func TestMetricsExposePositions(t *testing.T) {
	in := platformtest.Start(t, "")
	c, _ := in.NewApp(t, "metrics", "")
	register(t, c, "d1", "")
	platformtest.Eventually(t, 10*time.Second, "positions in /metrics", func() bool {
		resp, err := http.Get(in.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		return strings.Contains(body, "pushledger_ledger_last_position ") &&
			strings.Contains(body, `pushledger_projection_position{projection="device-registry"} `) &&
			!strings.Contains(body, `pushledger_projection_position{projection="device-registry"} 0`) &&
			strings.Contains(body, "pushledger_http_requests_total{")
	})
}

// TestBodyLimits: only submissions may carry a batch-sized body.
func TestBodyLimits(t *testing.T) {
	in := platformtest.Start(t, "")
	c, _ := in.NewApp(t, "limits", "")
	big := strings.Repeat("x", 100<<10)
	err := c.Do(context.Background(), http.MethodPut, "/v1/devices/d1", nil, api.DeviceRequest{Platform: "android", Brand: big}, nil)
	var p *client.Problem
	if !errors.As(err, &p) || p.Status != http.StatusRequestEntityTooLarge || p.Slug() != "payload-too-large" {
		t.Fatalf("100 KiB device body: %v", err)
	}
	register(t, c, "d1", "")
	var batch api.BatchRequest
	for range 100 { // ~4 KiB each: 400 KiB, far over the 64 KiB limit of other routes
		batch.Messages = append(batch.Messages, api.MessageRequest{Audience: message.Audience{DeviceIDs: []string{"d1"}},
			Notification: &message.Notification{Title: "t", Body: strings.Repeat("b", 4000)}})
	}
	var out api.AcceptedResponse
	if err := c.Do(context.Background(), http.MethodPost, "/v1/messages", nil, batch, &out); err != nil || len(out.MessageIDs) != 100 {
		t.Fatalf("batch of 100: %d ids, %v", len(out.MessageIDs), err)
	}
}
