// Package gatewaych makes pushledger's own long-connection gateway
// (package gateway) a delivery channel: Send pushes to the devices that
// are online and keeps the push in a store-and-forward outbox for the
// others, which get it when they connect; the devices' acknowledgements
// and opens come back through the gateway's Handler and are recorded in
// the ledger, the acknowledgements in batches (message.delivered.v2).
package gatewaych

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/wire"
	"github.com/pushledger/pushledger/projections"
)

// Name is the channel's name.
const Name = policy.ChannelGateway

// Apps maps app ids to apps and app keys to apps.
type Apps interface {
	ByID(id string) (*app.App, bool)
	ByKey(key string) (*app.App, bool)
}

// Devices is the device registry: an app's devices (for broadcasts) and
// one device (for the blacklist and logout checks at connect).
type Devices interface {
	Active(app string, fn func(v projections.DeviceBrief) bool) error
	Device(app, id string) (projections.DeviceView, error)
}

// Recorder records acknowledgements and opens (commands.Handler).
type Recorder interface {
	Message(ctx context.Context, id string, cmd message.Command) (message.Message, commands.Result, error)
}

// Pusher is the gateway server's delivery side (*gateway.Server).
type Pusher interface {
	Push(appKey, deviceID string, id wire.MessageID, flags wire.PushFlags, payload []byte) (online bool, err error)
	Disconnect(appKey, deviceID string, code wire.Code) bool
}

// Config of a Channel.
type Config struct {
	Outbox   *Outbox
	Apps     Apps
	Devices  Devices
	Recorder Recorder
	// Acknowledgements are gathered and recorded together (one event per
	// message per flush): once none has come for QuietInterval (default
	// 1 ms), or FlushInterval (default 10 ms) after the first one waiting,
	// whichever is sooner. So a broadcast's acks are recorded in a few
	// events while they stream in, and the last ones right after they
	// stop.
	FlushInterval time.Duration
	QuietInterval time.Duration
	// Now is the clock. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Channel is the gateway as a delivery channel, and the gateway's Handler.
// Attach the server with SetServer before it starts.
type Channel struct {
	cfg Config
	srv Pusher

	mu    sync.Mutex
	acked map[string]map[string][]wire.MessageID // app key -> device -> acknowledged ids
	opens []open
	// waiting is signalled when acknowledgements begin to wait; firstAck
	// is when the first of them came, lastAck when the last one did (Unix
	// ns).
	waiting           chan struct{}
	firstAck, lastAck atomic.Int64

	work chan func()
	// recorders record the messages' acknowledgements of a flush, 16 at
	// once, on goroutines that live on between flushes (made by Run).
	recorders *ants.Pool
	// removals carries recorded acknowledgements (app key -> device ->
	// ids) to the goroutine that drops their pushes from the outbox, so
	// that the next acknowledgements are recorded without waiting for it.
	removals chan map[string]map[string][]wire.MessageID
}

type open struct{ appKey, message, device string }

// New returns the channel. Run must run for acknowledgements to be
// recorded and connecting devices to get their waiting pushes.
func New(cfg Config) (*Channel, error) {
	if cfg.Outbox == nil || cfg.Apps == nil || cfg.Devices == nil || cfg.Recorder == nil {
		return nil, errors.New("gatewaych: needs an outbox, apps, devices and a recorder")
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	if cfg.QuietInterval <= 0 {
		cfg.QuietInterval = time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Channel{cfg: cfg, acked: map[string]map[string][]wire.MessageID{},
		waiting: make(chan struct{}, 1), work: make(chan func(), 4096), removals: make(chan map[string]map[string][]wire.MessageID, 16)}, nil
}

// SetServer attaches the gateway server pushes go through.
func (c *Channel) SetServer(p Pusher) { c.srv = p }

// Name implements channels.Channel.
func (c *Channel) Name() string { return Name }

// Payload is the JSON payload of a PUSH (docs/gateway-protocol.md).
type Payload struct {
	Notification *message.Notification `json:"notification,omitempty"`
	Data         json.RawMessage       `json:"data,omitempty"`
	CollapseID   string                `json:"collapse_id,omitempty"`
	ExpiresAt    *time.Time            `json:"expires_at,omitempty"`
}

// Send implements channels.Channel: the push goes to every target that is
// online now, and waits in the outbox for the others (and for those that
// do not acknowledge it). A push without targets is a broadcast to every
// active device of the app.
func (c *Channel) Send(_ context.Context, p channels.Push) (channels.Result, error) {
	now := c.cfg.Now()
	if !p.ExpiresAt.IsZero() && !now.Before(p.ExpiresAt) {
		return channels.Result{}, channels.ErrExpired
	}
	if c.srv == nil {
		return channels.Result{}, &channels.SendError{Class: channels.Transient, Reason: "gateway_not_running"}
	}
	id, err := wire.ParseMessageID(p.MessageID)
	if err != nil {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: "bad_message_id", Err: err}
	}
	a, ok := c.cfg.Apps.ByID(p.AppID)
	if !ok {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: "unknown_app"}
	}
	pl := Payload{Data: p.Data, CollapseID: p.CollapseID}
	if p.Title != "" || p.Body != "" {
		pl.Notification = &message.Notification{Title: p.Title, Body: p.Body}
	}
	if !p.ExpiresAt.IsZero() {
		t := p.ExpiresAt.UTC()
		pl.ExpiresAt = &t
	}
	payload, err := json.Marshal(pl)
	if err != nil {
		return channels.Result{}, &channels.SendError{Class: channels.Permanent, Reason: "invalid_data", Err: err}
	}
	var flags wire.PushFlags
	if p.Priority == message.PriorityHigh {
		flags |= wire.PushHighPriority
	}
	if p.Attempt > 1 {
		flags |= wire.PushRedelivery
	}
	e := Entry{ID: id, ExpiresAt: p.ExpiresAt, Flags: flags, Payload: payload}
	push := func(device string) error {
		_, err := c.srv.Push(a.Key, device, id, flags, payload)
		return err
	}
	if len(p.Targets) == 0 {
		// A broadcast: every active device of the app but those the app
		// blacklisted (now: the blacklist may have changed since accept).
		// Devices that connect later get it from the outbox; the blacklist
		// is checked again then.
		if err := c.cfg.Outbox.PutBroadcast(a.ID, e); err != nil {
			return channels.Result{}, &channels.SendError{Class: channels.Transient, Reason: "outbox", Err: err}
		}
		// Pushes only queue frames for the event loops: a few goroutines
		// push while the registry is read, keeping every loop busy.
		const pushers = 4
		work := make(chan string, 1024)
		var wg sync.WaitGroup
		for range pushers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range work {
					if err := push(id); err != nil {
						c.cfg.Logger.Debug("gateway push", "device", id, "err", err)
					}
				}
			}()
		}
		n := 0
		err := c.cfg.Devices.Active(a.ID, func(v projections.DeviceBrief) bool {
			if !a.Excludes(v.DeviceID, v.Alias, v.Tags) {
				work <- v.DeviceID
				n++
			}
			return true
		})
		close(work)
		wg.Wait()
		if err != nil {
			return channels.Result{}, &channels.SendError{Class: channels.Transient, Reason: "registry", Err: err}
		}
		return channels.Result{Accepted: max(n, 1)}, nil
	}
	devices := make([]string, len(p.Targets))
	for i, t := range p.Targets {
		devices[i] = t.DeviceID
	}
	if err := c.cfg.Outbox.Put(a.ID, devices, e); err != nil {
		return channels.Result{}, &channels.SendError{Class: channels.Transient, Reason: "outbox", Err: err}
	}
	for _, t := range p.Targets {
		if err := push(t.DeviceID); err != nil {
			// A slow or vanished connection: the push waits in the outbox.
			c.cfg.Logger.Debug("gateway push", "device", t.DeviceID, "err", err)
		}
	}
	return channels.Result{Accepted: len(p.Targets)}, nil
}

// OnConnect implements gateway.Handler: the device gets what waits for it.
func (c *Channel) OnConnect(conn gateway.Conn, lastAcked wire.MessageID) {
	if !lastAcked.IsZero() {
		c.OnAck(conn, []wire.MessageID{lastAcked})
	}
	key, device, issued := conn.AppKey, conn.DeviceID, conn.IssuedAt
	c.submit(func() { c.flush(key, device, issued) })
}

// OnAck implements gateway.Handler.
func (c *Channel) OnAck(conn gateway.Conn, ids []wire.MessageID) { c.note(conn, ids, false) }

// OnOpened implements gateway.Handler: an open implies delivery.
func (c *Channel) OnOpened(conn gateway.Conn, ids []wire.MessageID) { c.note(conn, ids, true) }

// note gathers acknowledgements (and opens) for Run to record.
func (c *Channel) note(conn gateway.Conn, ids []wire.MessageID, opened bool) {
	now := time.Now().UnixNano()
	c.lastAck.Store(now)
	c.mu.Lock()
	first := len(c.acked) == 0 && len(c.opens) == 0
	if first {
		c.firstAck.Store(now)
	}
	devices := c.acked[conn.AppKey]
	if devices == nil {
		devices = map[string][]wire.MessageID{}
		c.acked[conn.AppKey] = devices
	}
	devices[conn.DeviceID] = append(devices[conn.DeviceID], ids...)
	if opened {
		for _, id := range ids {
			c.opens = append(c.opens, open{appKey: conn.AppKey, message: id.String(), device: conn.DeviceID})
		}
	}
	c.mu.Unlock()
	if first {
		select {
		case c.waiting <- struct{}{}:
		default:
		}
	}
}

// OnDisconnect implements gateway.Handler.
func (c *Channel) OnDisconnect(gateway.Conn, gateway.Disconnect) {}

// submit queues work for Run's workers without blocking the event loop: a
// full queue hands it to a goroutine of its own.
func (c *Channel) submit(f func()) {
	select {
	case c.work <- f:
	default:
		go f()
	}
}

// flush pushes what waits for device of the app with key, whose
// credential was issued at issued (unix seconds; 0: unknown).
func (c *Channel) flush(key, device string, issued int64) {
	a, ok := c.cfg.Apps.ByKey(key)
	if !ok {
		return
	}
	// The credential verified without I/O on the event loop; here, off it,
	// the registry says whether the device may still connect: one logged
	// out (or never registered), or whose credential was issued before its
	// latest registration (it logged out and registered again since), is
	// disconnected with 3505, one the app blacklisted with 3508, and none
	// of them gets anything.
	v, err := c.cfg.Devices.Device(a.ID, device)
	if err != nil && !errors.Is(err, projections.ErrNotFound) {
		c.cfg.Logger.Error("gateway: device registry", "app", a.ID, "device", device, "err", err)
		return
	}
	switch {
	case err != nil || !v.Active || (issued != 0 && issued < v.RegisteredAt.Unix()):
		c.srv.Disconnect(key, device, wire.CodeCredentialRevoked)
		return
	case a.Excludes(v.DeviceID, v.Alias, v.Tags):
		c.srv.Disconnect(key, device, wire.CodeDeviceBlocked)
		return
	}
	err = c.cfg.Outbox.Pending(a.ID, device, c.cfg.Now(), func(e Entry) bool {
		online, err := c.srv.Push(key, device, e.ID, e.Flags|wire.PushRedelivery, e.Payload)
		return err == nil && online
	})
	if err != nil {
		c.cfg.Logger.Error("gateway outbox", "app", a.ID, "device", device, "err", err)
	}
}

// Run records acknowledgements and opens every FlushInterval, sweeps
// expired pushes from the outbox every minute and serves the connect work
// until ctx ends.
func (c *Channel) Run(ctx context.Context) error {
	var err error
	// A panic in a task is the process's, as on a goroutine of its own.
	if c.recorders, err = ants.NewPool(16, ants.WithPanicHandler(func(p any) { panic(p) })); err != nil {
		return err
	}
	defer c.recorders.Release()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case f := <-c.work:
					f()
				}
			}
		}()
	}
	removed := make(chan struct{})
	go func() {
		defer close(removed)
		for acked := range c.removals {
			c.remove(acked)
		}
	}()
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	// due is when the acknowledgements waiting are to be recorded: once
	// none has come for QuietInterval, or FlushInterval after the first.
	// Those that came while a recording ran may be due at once.
	due := func(now time.Time) time.Duration {
		quiet := now.Sub(time.Unix(0, c.lastAck.Load()))
		waited := now.Sub(time.Unix(0, c.firstAck.Load()))
		return max(0, min(c.cfg.QuietInterval-quiet, c.cfg.FlushInterval-waited))
	}
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			c.record(context.WithoutCancel(ctx)) // what was acknowledged so far
			close(c.removals)
			<-removed
			wg.Wait()
			return nil
		case <-c.waiting:
			flush.Reset(due(time.Now()))
		case now := <-flush.C:
			if d := due(now); d > 0 {
				flush.Reset(d)
				continue
			}
			// Acknowledgements that come meanwhile signal waiting again.
			c.record(ctx)
		case <-sweep.C:
			// Expired pushes of devices that never came back.
			if _, err := c.cfg.Outbox.Sweep(c.cfg.Now()); err != nil {
				c.cfg.Logger.Error("gateway outbox sweep", "err", err)
			}
		}
	}
}

// record writes the acknowledgements gathered since the last call: one
// event per message (message.delivered.v2), then the opens, then hands
// them to Run's goroutine that drops the acknowledged pushes from the
// outbox. Should the process stop before it has, a device that reconnects
// gets such a push again, marked as a redelivery, and acknowledges it
// again.
func (c *Channel) record(ctx context.Context) {
	c.mu.Lock()
	acked, opens := c.acked, c.opens
	if len(acked) == 0 && len(opens) == 0 {
		c.mu.Unlock()
		return
	}
	c.acked, c.opens = map[string]map[string][]wire.MessageID{}, nil
	c.mu.Unlock()

	// Per message and acknowledging app: the command checks that the
	// message is the app's and the devices its targets.
	type appMessage struct {
		app string
		id  wire.MessageID
	}
	byMessage := map[appMessage][]string{}
	for key, devices := range acked {
		a, ok := c.cfg.Apps.ByKey(key)
		if !ok {
			continue
		}
		for device, ids := range devices {
			for _, id := range ids {
				k := appMessage{a.ID, id}
				byMessage[k] = append(byMessage[k], device)
			}
		}
	}
	var wg sync.WaitGroup
	for am, devices := range byMessage {
		for len(devices) > 0 {
			n := min(len(devices), message.MaxDeliveriesPerEvent)
			batch := devices[:n]
			devices = devices[n:]
			wg.Add(1)
			rec := func() {
				defer wg.Done()
				c.apply(ctx, am.id.String(), message.RecordDeliveries{DeviceIDs: batch, Channel: Name, AppID: am.app})
			}
			if c.recorders.Submit(rec) != nil { // released: Run is ending
				rec()
			}
		}
	}
	wg.Wait()
	for _, o := range opens {
		if a, ok := c.cfg.Apps.ByKey(o.appKey); ok {
			c.apply(ctx, o.message, message.RecordOpened{DeviceID: o.device, Channel: Name, AppID: a.ID})
		}
	}
	if len(acked) > 0 {
		c.removals <- acked
	}
}

// remove drops acknowledged pushes from the outbox.
func (c *Channel) remove(acked map[string]map[string][]wire.MessageID) {
	for key, devices := range acked {
		a, ok := c.cfg.Apps.ByKey(key)
		if !ok {
			continue
		}
		if err := c.cfg.Outbox.AckMany(a.ID, devices); err != nil {
			c.cfg.Logger.Error("gateway outbox ack", "app", a.ID, "err", err)
		}
	}
}

func (c *Channel) apply(ctx context.Context, id string, cmd message.Command) {
	_, _, err := c.cfg.Recorder.Message(ctx, id, cmd)
	switch {
	case err == nil, errors.Is(err, message.ErrInvalidTransition), errors.Is(err, message.ErrNotFound),
		errors.Is(err, message.ErrNotTarget):
		// Recorded, or refused: a message that had no attempt or was
		// cancelled, an id the device made up, another app's message or
		// one the device was not sent.
	default:
		c.cfg.Logger.Error("gateway: record "+fmt.Sprint(cmd), "message", id, "err", err)
	}
}

var _ channels.Channel = (*Channel)(nil)
var _ gateway.Handler = (*Channel)(nil)
