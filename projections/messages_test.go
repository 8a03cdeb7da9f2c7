package projections_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

// TestFoldStatus folds a realistic history: a retryable failure on one
// channel, a second attempt on another, deliveries to two devices, an open,
// and a late delivery after the open.
func TestFoldStatus(t *testing.T) {
	e := newEnv(t)
	res := e.accept(t, "app1", "m1")
	steps := []struct {
		cmd   message.Command
		state message.State
	}{
		{message.StartAttempt{Channel: "apns"}, message.StateSending},
		{message.RecordFailure{Attempt: 1, Channel: "apns", Reason: "timeout", Status: 503, Retryable: true}, message.StateFailed},
		{message.StartAttempt{Channel: "fcm"}, message.StateSending},
		{message.RecordSent{Attempt: 2, Channel: "fcm", ProviderID: "p-1", Accepted: 2}, message.StateSent},
		{message.RecordDelivered{DeviceID: "d1", Channel: "fcm"}, message.StateDelivered},
		{message.RecordDelivered{DeviceID: "d2", Channel: "fcm"}, message.StateDelivered},
		{message.RecordOpened{DeviceID: "d1", Channel: "fcm"}, message.StateOpened},
		{message.RecordDelivered{DeviceID: "d3", Channel: "fcm"}, message.StateOpened},
		{message.RecordDeliveries{DeviceIDs: []string{"d5", "d4", "d1"}, Channel: "fcm"}, message.StateOpened},
	}
	for _, s := range steps {
		e.message(t, "m1", s.cmd)
	}
	evs := readStream(t, e, message.Stream("m1"))
	if len(evs) != len(steps)+1 {
		t.Fatalf("%d events", len(evs))
	}
	var s projections.MessageStatus
	wantStates := []message.State{message.StateAccepted}
	for _, st := range steps {
		wantStates = append(wantStates, st.state)
	}
	for i, re := range evs {
		if err := projections.FoldStatus(&s, re); err != nil {
			t.Fatal(err)
		}
		if s.State != wantStates[i] || s.Revision != re.Revision {
			t.Fatalf("after %s: state %s revision %d, want %s %d", re.Type, s.State, s.Revision, wantStates[i], re.Revision)
		}
	}
	m, _, err := e.h.LoadMessage(context.Background(), "m1")
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "m1" || s.AppID != "app1" || s.Attempt != 2 || s.Channel != "fcm" || s.LastError != "timeout" || s.FinalFailure ||
		s.TargetCount != 5 || s.SendAt != nil || !s.AcceptedAt.Equal(m.AcceptedAt) || !s.UpdatedAt.Equal(m.UpdatedAt) ||
		!s.ExpiresAt.Equal(m.ExpiresAt) || s.Revision != uint64(len(steps)) {
		t.Fatalf("status %+v\nmessage %+v", s, m)
	}
	if s.State != m.State {
		t.Fatalf("status says %s, the domain %s", s.State, m.State)
	}
	wantCounts := map[message.State]int{
		message.StateAccepted: 1, message.StateSending: 2, message.StateFailed: 1, message.StateSent: 1,
		message.StateDelivered: 5, message.StateOpened: 1,
	}
	if !mapsEqual(s.Counts, wantCounts) {
		t.Fatalf("counts %v, want %v", s.Counts, wantCounts)
	}
	if len(s.Channels) != 2 || *s.Channels["apns"] != (projections.ChannelCounts{Attempts: 1, Failed: 1}) ||
		*s.Channels["fcm"] != (projections.ChannelCounts{Attempts: 1, Sent: 1, Delivered: 5, Opened: 1}) {
		t.Fatalf("channels apns %+v fcm %+v", s.Channels["apns"], s.Channels["fcm"])
	}

	// The projection stores the same status.
	r := e.runner(t, projections.Messages{}, e.kv)
	catchUp(t, r)
	page, _, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1"})
	if err != nil || len(page) != 1 {
		t.Fatalf("ListMessages = %v, %v", page, err)
	}
	if a, b := mustJSON(t, page[0]), mustJSON(t, s); a != b {
		t.Fatalf("stored status %s\nfolded %s", a, b)
	}
	if r.Position() != e.last(t) || res.Position != 1 {
		t.Fatalf("runner at %d, ledger at %d", r.Position(), e.last(t))
	}
	// Unknown event types are reported.
	bad := evs[0]
	bad.Type = "message.unknown.v9"
	if err := projections.FoldStatus(&s, bad); err == nil {
		t.Fatal("FoldStatus accepted an unknown event type")
	}
}

// TestFoldStatusScheduledAndFinal covers the other ends: a scheduled
// message cancelled, a final failure, an expiry.
func TestFoldStatusScheduledAndFinal(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sendAt := epoch.Add(time.Hour)
	if _, _, err := e.h.AcceptMessage(ctx, message.Accept{MessageID: "s1", AppID: "app1", Audience: message.Audience{Broadcast: true},
		Notification: &message.Notification{Title: "t"}, SendAt: &sendAt, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	e.message(t, "s1", message.Cancel{Reason: "no"})
	e.accept(t, "app1", "f1")
	e.message(t, "f1", message.StartAttempt{Channel: "fcm"})
	e.message(t, "f1", message.RecordFailure{Attempt: 1, Channel: "fcm", Reason: "BadDeviceToken", Final: true})

	fold := func(id string) projections.MessageStatus {
		var s projections.MessageStatus
		for _, re := range readStream(t, e, message.Stream(id)) {
			if err := projections.FoldStatus(&s, re); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	s := fold("s1")
	if s.State != message.StateCancelled || s.SendAt == nil || !s.SendAt.Equal(sendAt) ||
		!mapsEqual(s.Counts, map[message.State]int{message.StateAccepted: 1, message.StateScheduled: 1, message.StateCancelled: 1}) ||
		len(s.Channels) != 0 || !s.ExpiresAt.Equal(sendAt.Add(time.Minute)) {
		t.Fatalf("scheduled and cancelled: %+v", s)
	}
	// A message that failed before any channel was chosen.
	if _, _, err := e.h.Message(ctx, "f1", message.RecordFailure{Attempt: 0, Reason: "no_channel", Final: true}); err == nil {
		t.Fatal("a channel-less failure after an attempt was accepted")
	}
	e.accept(t, "app1", "n1")
	e.message(t, "n1", message.RecordFailure{Attempt: 0, Reason: "no_channel", Final: true})
	n := fold("n1")
	if n.State != message.StateFailed || !n.FinalFailure || n.LastError != "no_channel" || len(n.Channels) != 0 ||
		n.Counts[message.StateFailed] != 1 {
		t.Fatalf("channel-less failure: %+v", n)
	}
	f := fold("f1")
	if f.State != message.StateFailed || !f.FinalFailure || f.LastError != "BadDeviceToken" || f.Channels["fcm"].Failed != 1 {
		t.Fatalf("final failure: %+v", f)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// listAll pages through a query and returns the ids in order, failing if
// a page is longer than the limit.
func listAll(t *testing.T, st projections.Store, q projections.MessageQuery) (ids []string, pages int) {
	t.Helper()
	for {
		page, next, err := projections.ListMessages(st, q)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if q.Limit > 0 && len(page) > q.Limit {
			t.Fatalf("page of %d, limit %d", len(page), q.Limit)
		}
		for _, s := range page {
			ids = append(ids, s.ID)
		}
		if next == "" {
			return ids, pages
		}
		if pages > 1000 {
			t.Fatal("pagination does not end")
		}
		q.After = next
	}
}

func TestListMessages(t *testing.T) {
	e := newEnv(t)
	// m00..m09 of app1, accepted 1 ms apart (newest last), with messages of
	// app2 in between.
	var all []string
	accepted := map[string]time.Time{}
	for i := range 10 {
		id := fmt.Sprintf("m%02d", i)
		e.accept(t, "app1", id)
		all = append(all, id)
		if i%3 == 0 {
			e.accept(t, "app2", fmt.Sprintf("other%02d", i))
		}
	}
	for _, id := range []string{"m02", "m05", "m07"} {
		e.message(t, id, message.StartAttempt{Channel: "fcm"})
		e.message(t, id, message.RecordSent{Attempt: 1, Channel: "fcm"})
	}
	e.message(t, "m03", message.Cancel{})
	e.message(t, "m08", message.StartAttempt{Channel: "fcm"})
	r := e.runner(t, projections.Messages{}, e.kv)
	catchUp(t, r)
	for _, id := range all {
		m, _, err := e.h.LoadMessage(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		accepted[id] = m.AcceptedAt
	}
	newest := slices.Clone(all)
	slices.Reverse(newest)
	except := func(ids []string, drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(drop, id) })
	}

	page, next, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1"})
	if err != nil || next != "" || len(page) != 10 {
		t.Fatalf("ListMessages = %d items, next %q, %v", len(page), next, err)
	}
	for i, s := range page {
		if s.ID != newest[i] || s.AppID != "app1" {
			t.Fatalf("item %d is %s of %s, want %s", i, s.ID, s.AppID, newest[i])
		}
		if i > 0 && !s.AcceptedAt.Before(page[i-1].AcceptedAt) {
			t.Fatalf("not newest first at %d", i)
		}
	}
	stateOf := map[string]message.State{}
	for _, s := range page {
		stateOf[s.ID] = s.State
	}
	if stateOf["m02"] != message.StateSent || stateOf["m03"] != message.StateCancelled || stateOf["m08"] != message.StateSending || stateOf["m09"] != message.StateAccepted {
		t.Fatalf("states %v", stateOf)
	}

	cases := []struct {
		name string
		q    projections.MessageQuery
		want []string
	}{
		{"all", projections.MessageQuery{AppID: "app1"}, newest},
		{"other app", projections.MessageQuery{AppID: "app2"}, []string{"other09", "other06", "other03", "other00"}},
		{"unknown app", projections.MessageQuery{AppID: "app"}, nil},
		{"accepted", projections.MessageQuery{AppID: "app1", State: message.StateAccepted}, except(newest, "m02", "m03", "m05", "m07", "m08")},
		{"sent", projections.MessageQuery{AppID: "app1", State: message.StateSent}, []string{"m07", "m05", "m02"}},
		{"sending", projections.MessageQuery{AppID: "app1", State: message.StateSending}, []string{"m08"}},
		{"cancelled", projections.MessageQuery{AppID: "app1", State: message.StateCancelled}, []string{"m03"}},
		{"delivered", projections.MessageQuery{AppID: "app1", State: message.StateDelivered}, nil},
		{"since", projections.MessageQuery{AppID: "app1", Since: accepted["m06"]}, []string{"m09", "m08", "m07", "m06"}},
		{"until", projections.MessageQuery{AppID: "app1", Until: accepted["m02"]}, []string{"m01", "m00"}},
		{"since until", projections.MessageQuery{AppID: "app1", Since: accepted["m03"], Until: accepted["m07"]}, []string{"m06", "m05", "m04", "m03"}},
		{"since until sent", projections.MessageQuery{AppID: "app1", State: message.StateSent, Since: accepted["m03"], Until: accepted["m07"]}, []string{"m05"}},
		{"since between", projections.MessageQuery{AppID: "app1", Since: accepted["m08"].Add(-time.Nanosecond)}, []string{"m09", "m08"}},
		{"empty range", projections.MessageQuery{AppID: "app1", Since: accepted["m05"], Until: accepted["m05"]}, nil},
		{"reversed range", projections.MessageQuery{AppID: "app1", Since: accepted["m07"], Until: accepted["m03"]}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, limit := range []int{0, 1, 2, 3, 4, 10, 11} {
				q := c.q
				q.Limit = limit
				got, pages := listAll(t, e.kv, q)
				if !slices.Equal(got, c.want) {
					t.Fatalf("limit %d: %v, want %v", limit, got, c.want)
				}
				if limit > 0 && pages > len(c.want)/limit+1 {
					t.Fatalf("limit %d: %d pages for %d items", limit, pages, len(c.want))
				}
			}
		})
	}

	// A message moving on leaves its old state's listing.
	e.message(t, "m09", message.StartAttempt{Channel: "fcm"})
	e.message(t, "m09", message.RecordSent{Attempt: 1, Channel: "fcm"})
	catchUp(t, r)
	if got, _ := listAll(t, e.kv, projections.MessageQuery{AppID: "app1", State: message.StateAccepted}); slices.Contains(got, "m09") {
		t.Fatalf("m09 is still listed as accepted: %v", got)
	}
	if got, _ := listAll(t, e.kv, projections.MessageQuery{AppID: "app1", State: message.StateSent}); !slices.Equal(got, []string{"m09", "m07", "m05", "m02"}) {
		t.Fatalf("sent: %v", got)
	}
	if got, _ := listAll(t, e.kv, projections.MessageQuery{AppID: "app1"}); !slices.Equal(got, newest) {
		t.Fatalf("all after moves: %v", got)
	}
}

// TestListMessagesPagination: pages of a listing that grows between pages
// still list every earlier message exactly once.
func TestListMessagesPagination(t *testing.T) {
	e := newEnv(t)
	r := e.runner(t, projections.Messages{}, e.kv)
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("m%02d", i)
		e.accept(t, "app1", id)
		want = append([]string{id}, want...)
	}
	catchUp(t, r)
	q := projections.MessageQuery{AppID: "app1", Limit: 7}
	var got []string
	for {
		page, next, err := projections.ListMessages(e.kv, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page {
			got = append(got, s.ID)
		}
		// Newer messages arriving between pages do not shift the pages.
		e.accept(t, "app1", fmt.Sprintf("late%02d", len(got)))
		catchUp(t, r)
		if next == "" {
			break
		}
		q.After = next
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pages gave %v\nwant %v", got, want)
	}
	// Limits: above 1000 is 1000; the default is 50.
	for range 30 {
		e.accept(t, "app1", fmt.Sprint("more", e.last(t)))
	}
	catchUp(t, r)
	page, next, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1"})
	if err != nil || len(page) != 50 || next == "" {
		t.Fatalf("default page: %d items, next %q, %v", len(page), next, err)
	}
	page, next, err = projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1", Limit: 5000})
	if err != nil || len(page) == 0 || len(page) > 1000 || next != "" {
		t.Fatalf("large page: %d items, next %q, %v", len(page), next, err)
	}
}

func TestListMessagesBadPageToken(t *testing.T) {
	e := newEnv(t)
	e.accept(t, "app1", "m1")
	e.accept(t, "app1", "m2")
	catchUp(t, e.runner(t, projections.Messages{}, e.kv))
	for _, tok := range []string{"!!!", "a b", "AAAA", base64.RawURLEncoding.EncodeToString([]byte("12345678")), "=="} {
		if _, _, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1", After: tok}); !errors.Is(err, projections.ErrBadPageToken) {
			t.Errorf("token %q: %v, want ErrBadPageToken", tok, err)
		}
	}
	// A good token still works.
	_, next, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1", Limit: 1})
	if err != nil || next == "" {
		t.Fatal(next, err)
	}
	page, _, err := projections.ListMessages(e.kv, projections.MessageQuery{AppID: "app1", Limit: 1, After: next})
	if err != nil || len(page) != 1 || page[0].ID != "m1" {
		t.Fatalf("second page %v, %v", page, err)
	}
}

// TestFoldStatusGiveUpAndResend: a give-up closes the failed attempt without
// counting a second failure; a resend clears the final flag and the next
// attempt counts on its channel.
func TestFoldStatusGiveUpAndResend(t *testing.T) {
	e := newEnv(t)
	e.accept(t, "app1", "g1")
	e.message(t, "g1", message.StartAttempt{Channel: "fcm"})
	e.message(t, "g1", message.RecordFailure{Attempt: 1, Channel: "fcm", Reason: "http_503", Class: message.ClassTransient, Retryable: true})
	e.message(t, "g1", message.RecordFailure{Attempt: 1, Channel: "fcm", Reason: "gave_up", Final: true, Alert: "no channel left"})
	fold := func() projections.MessageStatus {
		var s projections.MessageStatus
		for _, re := range readStream(t, e, message.Stream("g1")) {
			if err := projections.FoldStatus(&s, re); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	s := fold()
	if s.State != message.StateFailed || !s.FinalFailure || s.LastError != "gave_up" || s.Channels["fcm"].Failed != 1 || s.Counts[message.StateFailed] != 2 {
		t.Fatalf("after give-up: %+v %+v", s, s.Channels["fcm"])
	}
	e.message(t, "g1", message.Resend{Reason: "operator"})
	s = fold()
	if s.State != message.StateFailed || s.FinalFailure {
		t.Fatalf("after resend: state %s final %v", s.State, s.FinalFailure)
	}
	// A resend enters no state: counts are of the events of each state.
	if s.Counts[message.StateFailed] != 2 || len(s.Counts) != 3 {
		t.Fatalf("after resend: counts %v, want accepted 1, sending 1, failed 2", s.Counts)
	}
	e.message(t, "g1", message.StartAttempt{Channel: "webhook"})
	e.message(t, "g1", message.RecordSent{Attempt: 2, Channel: "webhook"})
	s = fold()
	if s.State != message.StateSent || s.Attempt != 2 || s.Channels["webhook"].Attempts != 1 || s.Channels["fcm"].Attempts != 1 {
		t.Fatalf("after the new cycle: %+v", s)
	}
	if s.Counts[message.StateSent] != 1 || s.Counts[message.StateSending] != 2 || s.Counts[message.StateFailed] != 2 {
		t.Fatalf("after the new cycle: counts %v", s.Counts)
	}
}
