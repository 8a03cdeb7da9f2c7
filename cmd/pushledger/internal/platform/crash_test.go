package platform_test

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels/webhook"
	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform/platformtest"
	"github.com/pushledger/pushledger/domain/message"
)

// flakyReceiver is a webhook receiver that, while flaky is set, refuses four in seven
// of the attempts with 503 (decided by a hash of message id and
// attempt, so a retry may pass), and records every call it gets.
type flakyReceiver struct {
	srv   *httptest.Server
	flaky atomic.Bool

	mu    sync.Mutex
	calls map[string]map[int]int // message id -> attempt -> calls
	total int
}

func newFlakyReceiver(t *testing.T) *flakyReceiver {
	r := &flakyReceiver{calls: map[string]map[int]int{}}
	r.flaky.Store(true)
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p webhook.Payload
		if err := json.Unmarshal(body, &p); err != nil || p.MessageID == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		if r.calls[p.MessageID] == nil {
			r.calls[p.MessageID] = map[int]int{}
		}
		r.calls[p.MessageID][p.Attempt]++
		r.total++
		r.mu.Unlock()
		h := fnv.New32a()
		h.Write([]byte(p.MessageID))
		h.Write([]byte{byte(p.Attempt)})
		if r.flaky.Load() && h.Sum32()%7 < 4 { // mod 7 mixes every bit (FNV-1a's low bit follows the last byte's)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// TestSagasSurviveKill9 is the delivery sagas' crash test: under a steady
// load against a flaky, then recovering, webhook receiver, the server is
// killed with SIGKILL at random moments, 10 times, and restarted. At the
// end: no acknowledged message is lost, every one is settled (sent, or
// failed finally when its attempts ran out), every call the receiver got
// carried the id of a recorded message and an attempt its history started,
// and no attempt was sent twice.
func TestSagasSurviveKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test skipped in -short mode")
	}
	const kills = 10
	dir := t.TempDir()
	rcv := newFlakyReceiver(t)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var (
		acked []string
		c     *client.Client
	)
	for round := range kills {
		url, kill := startChild(t, dir)
		if c == nil {
			c = crashApp(t, dir, url, rcv.srv.URL)
		}
		c.BaseURL = url
		rcv.flaky.Store(round < kills-3) // the receiver recovers for the last rounds
		// Kill at a random moment: after 30..150 more acknowledgements, with
		// sends, retries and timers in flight.
		submitUntilKilled(t, c, 4, 30+rng.IntN(120), kill, &acked)
	}

	// Restart once more and let every message settle.
	url, _ := startChild(t, dir)
	c.BaseURL = url
	rcv.flaky.Store(false)
	settled := map[string]string{}
	var pending []string
	platformtest.Eventually(t, 90*time.Second, "every acknowledged message settled", func() bool {
		pending = pending[:0]
		for _, id := range acked {
			if _, ok := settled[id]; ok {
				continue
			}
			var st struct {
				State        message.State `json:"state"`
				FinalFailure bool          `json:"final_failure"`
			}
			if err := c.Do(context.Background(), http.MethodGet, "/v1/messages/"+id, nil, nil, &st); err != nil {
				t.Fatalf("acknowledged message %s: %v", id, err)
			}
			if st.State == message.StateSent || (st.State == message.StateFailed && st.FinalFailure) {
				settled[id] = string(st.State)
			} else {
				pending = append(pending, id+":"+string(st.State))
			}
		}
		return len(pending) == 0
	})

	// Every call carried a recorded message's id and an attempt that its
	// history started; no attempt was called twice.
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	dups, sentCount, failedCount, retried, maxAttempts := 0, 0, 0, 0, 0
	for id, attempts := range rcv.calls {
		evs := history(t, c, id)
		if len(evs) == 0 || evs[0].Type != message.TypeAccepted {
			t.Errorf("the receiver got message %s, which the ledger does not hold", id)
			continue
		}
		started := map[int]bool{}
		for _, e := range evs {
			if e.Type == message.TypeSending {
				var s struct {
					Attempt int `json:"attempt"`
				}
				_ = json.Unmarshal(e.Data, &s)
				started[s.Attempt] = true
			}
		}
		for a, n := range attempts {
			if !started[a] {
				t.Errorf("message %s: the receiver got attempt %d, which its history never started", id, a)
			}
			if n > 1 {
				dups++
			}
		}
		if len(started) > 1 {
			retried++
		}
		maxAttempts = max(maxAttempts, len(started))
	}
	for _, s := range settled {
		if s == string(message.StateSent) {
			sentCount++
		} else {
			failedCount++
		}
	}
	if dups > 0 {
		t.Errorf("%d attempts were sent twice", dups)
	}
	t.Logf("%d kills; %d acknowledged messages, none lost: %d sent, %d failed finally; %d retried (up to %d attempts); %d receiver calls; %d duplicate sends",
		kills, len(acked), sentCount, failedCount, retried, maxAttempts, rcv.total, dups)
	if os.Getenv("PUSHLEDGER_CRASH_REPORT") != "" {
		_ = os.WriteFile(os.Getenv("PUSHLEDGER_CRASH_REPORT"), []byte(strings.Join(pending, "\n")), 0o600)
	}
}

// submitUntilKilled has clients submit messages to device d1 as fast as
// they can, kills the server once extra more of them were acknowledged,
// and adds every acknowledged id to acked.
func submitUntilKilled(t *testing.T, c *client.Client, clients, extra int, kill func(), acked *[]string) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	target := len(*acked) + extra
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var out api.AcceptedResponse
				err := c.Do(context.Background(), http.MethodPost, "/v1/messages", nil, api.MessageRequest{
					Audience: message.Audience{DeviceIDs: []string{"d1"}}, Notification: &message.Notification{Title: "crash"}}, &out)
				if err != nil {
					return // the server died
				}
				mu.Lock()
				*acked = append(*acked, out.MessageIDs...)
				mu.Unlock()
			}
		}()
	}
	platformtest.Eventually(t, 30*time.Second, "acknowledgements", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(*acked) >= target
	})
	kill()
	wg.Wait()
}

// crashApp creates the crash test's app (webhook to hook, none when empty)
// and its device.
func crashApp(t *testing.T, dir, url, hook string) *client.Client {
	t.Helper()
	admin := &client.Client{BaseURL: url, HTTP: &http.Client{Timeout: 10 * time.Second}}
	tok, err := os.ReadFile(dir + "/admin.token")
	if err != nil {
		t.Fatal(err)
	}
	admin.AdminToken = strings.TrimSpace(string(tok))
	var app api.CreatedApp
	if err := admin.Do(context.Background(), http.MethodPost, "/admin/v1/apps", nil, api.CreateAppRequest{Name: "crash", WebhookURL: hook}, &app); err != nil {
		t.Fatal(err)
	}
	c := &client.Client{BaseURL: url, AppKey: app.AppKey, AppSecret: app.AppSecret, HTTP: admin.HTTP}
	register(t, c, "d1", "")
	return c
}
