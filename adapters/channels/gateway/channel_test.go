package gatewaych_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
	gatewaych "github.com/pushledger/pushledger/adapters/channels/gateway"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
	"github.com/pushledger/pushledger/projections"
)

type oneApp struct{ a *app.App }

func (o oneApp) ByID(id string) (*app.App, bool)   { return o.a, id == o.a.ID }
func (o oneApp) ByKey(key string) (*app.App, bool) { return o.a, key == o.a.Key }

type noDevices struct{}

func (noDevices) Active(string, func(projections.DeviceBrief) bool) error { return nil }
func (noDevices) Device(string, string) (projections.DeviceView, error) {
	return projections.DeviceView{}, projections.ErrNotFound
}

// someDevices is a registry of active devices (by id).
type someDevices struct {
	noDevices
	active map[string]projections.DeviceBrief
}

func (d *someDevices) Active(_ string, fn func(projections.DeviceBrief) bool) error {
	for _, id := range slices.Sorted(maps.Keys(d.active)) {
		if !fn(d.active[id]) {
			break
		}
	}
	return nil
}

// somePusher has some devices online and records what it pushed. Safe
// for concurrent use (a broadcast pushes from several goroutines).
type somePusher struct {
	online map[string]bool
	mu     sync.Mutex
	pushed []string
	kicked []string // device:code of Disconnect calls
}

func (p *somePusher) Push(_, device string, _ wire.MessageID, _ wire.PushFlags, _ []byte) (bool, error) {
	if !p.online[device] {
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pushed = append(p.pushed, device)
	return true, nil
}

func (p *somePusher) Disconnect(_, device string, code wire.Code) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kicked = append(p.kicked, fmt.Sprintf("%s:%d", device, code))
	return p.online[device]
}

// TestBroadcastReachesTheOnlineDevices: a broadcast is pushed at once to
// every online device that is active and not blacklisted (by id or by
// group); a logged-out device still connected does not get it.
func TestBroadcastReachesTheOnlineDevices(t *testing.T) {
	a := &app.App{ID: "app1", Key: "key1", Blacklist: map[string]map[string]struct{}{
		app.KindDevice: {"d03": {}}, app.KindGroup: {"banned": {}}}}
	for _, tc := range []struct {
		name   string
		online int // d00 .. online-1, plus "gone" (logged out, still connected)
	}{
		{"few online", 10},
		{"many online", 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs := &someDevices{active: map[string]projections.DeviceBrief{}}
			pusher := &somePusher{online: map[string]bool{"gone": true}}
			var want []string
			for i := range 100 {
				id := fmt.Sprintf("d%02d", i)
				b := projections.DeviceBrief{DeviceID: id, Active: true}
				if i == 5 {
					b.Tags = []string{"banned"}
				}
				devs.active[id] = b
				if i < tc.online {
					pusher.online[id] = true
					if i != 3 && i != 5 {
						want = append(want, id)
					}
				}
			}
			ch, err := gatewaych.New(gatewaych.Config{Outbox: newOutbox(t), Apps: oneApp{a}, Devices: devs, Recorder: &recorder{cmds: map[string][]message.Command{}}})
			if err != nil {
				t.Fatal(err)
			}
			ch.SetServer(pusher)
			res, err := ch.Send(context.Background(), channels.Push{MessageID: id(9).String(), AppID: "app1", Title: "all"})
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(pusher.pushed)
			if !slices.Equal(pusher.pushed, want) {
				t.Fatalf("pushed to %v\nwant %v", pusher.pushed, want)
			}
			if res.Accepted != 98 {
				t.Fatalf("accepted %d, want 98: the active devices but the blacklisted", res.Accepted)
			}
		})
	}
}

// recorder keeps the commands the channel records, per message.
type recorder struct {
	mu   sync.Mutex
	cmds map[string][]message.Command
}

func (r *recorder) Message(_ context.Context, id string, cmd message.Command) (message.Message, commands.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cmds[id] = append(r.cmds[id], cmd)
	return message.Message{}, commands.Result{}, nil
}

func (r *recorder) devices(id string) (n, events int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cmds[id] {
		if d, ok := c.(message.RecordDeliveries); ok {
			n += len(d.DeviceIDs)
			events++
		}
	}
	return n, events
}

// TestAcksRecordedWhenTheyStop: acknowledgements are recorded once they
// stop coming (QuietInterval), without waiting for FlushInterval (an hour
// here), together: one event for the acks of one message gathered at once.
func TestAcksRecordedWhenTheyStop(t *testing.T) {
	rec := &recorder{cmds: map[string][]message.Command{}}
	ch := runChannel(t, rec, time.Hour, 200*time.Millisecond)

	m := id(7)
	for _, d := range []string{"d1", "d2", "d3"} {
		ch.OnAck(gateway.Conn{AppKey: "key1", DeviceID: d}, []wire.MessageID{m})
	}
	eventually(t, "3 acks recorded", func() bool { n, _ := rec.devices(m.String()); return n == 3 })
	if _, events := rec.devices(m.String()); events != 1 {
		t.Fatalf("3 acks gathered at once recorded in %d events, want 1", events)
	}
	// An open alone is recorded too (as delivered and opened).
	ch.OnOpened(gateway.Conn{AppKey: "key1", DeviceID: "d4"}, []wire.MessageID{m})
	eventually(t, "the open recorded", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, c := range rec.cmds[m.String()] {
			if o, ok := c.(message.RecordOpened); ok && o.DeviceID == "d4" {
				return true
			}
		}
		return false
	})
	if n, _ := rec.devices(m.String()); n != 4 {
		t.Fatalf("%d devices recorded as delivered, want 4", n)
	}
}

// runChannel runs a channel of app1 (key1), recording through rec with the
// given intervals, until the test ends.
func runChannel(t *testing.T, rec gatewaych.Recorder, flush, quiet time.Duration) *gatewaych.Channel {
	t.Helper()
	a := &app.App{ID: "app1", Key: "key1"}
	ch, err := gatewaych.New(gatewaych.Config{Outbox: newOutbox(t), Apps: oneApp{a}, Devices: noDevices{},
		Recorder: rec, FlushInterval: flush, QuietInterval: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ch.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingRecorder records like recorder, but its first command waits
// until release is closed.
type blockingRecorder struct {
	recorder
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (r *blockingRecorder) Message(ctx context.Context, id string, cmd message.Command) (message.Message, commands.Result, error) {
	r.once.Do(func() { close(r.entered); <-r.release })
	return r.recorder.Message(ctx, id, cmd)
}

// TestAcksWaitingThroughARecordingAreDue: acknowledgements are recorded
// FlushInterval after they came even when QuietInterval is longer, and
// FlushInterval counts from when they came, not from when the recording
// before them ended: one that came while a slow recording ran, and has
// waited FlushInterval by its end, is recorded right after it.
func TestAcksWaitingThroughARecordingAreDue(t *testing.T) {
	rec := &blockingRecorder{recorder: recorder{cmds: map[string][]message.Command{}}, entered: make(chan struct{}), release: make(chan struct{})}
	const flush = time.Second
	ch := runChannel(t, rec, flush, time.Hour)

	m := id(9)
	ch.OnAck(gateway.Conn{AppKey: "key1", DeviceID: "d1"}, []wire.MessageID{m})
	select { // recording d1, FlushInterval after its ack
	case <-rec.entered:
	case <-time.After(10 * time.Second):
		close(rec.release)
		t.Fatal("d1 not recorded FlushInterval after its ack")
	}
	ch.OnAck(gateway.Conn{AppKey: "key1", DeviceID: "d2"}, []wire.MessageID{m})
	since := time.Now()
	eventually(t, "d2's ack waited FlushInterval", func() bool { return time.Since(since) > flush })
	released := time.Now()
	close(rec.release)
	eventually(t, "d2 recorded", func() bool { n, _ := rec.devices(m.String()); return n == 2 })
	// Not another FlushInterval later, counted from the release; half of
	// it is margin for a slow machine.
	if took := time.Since(released); took > flush/2 {
		t.Fatalf("d2 recorded %v after the recording before it ended, want at once", took)
	}
}
