// Package sagas holds pushledger's process managers: ledger-driven loops
// that decide what happens after each transition of a message and record
// every decision in the ledger. The decisions are the domain's; this package
// owns the runtime (subscription, checkpoint, concurrency).
package sagas

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pushledger/pushledger/adapters/channels"
	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

// Apps gives the dispatcher an app's channel settings and secret.
type Apps interface {
	ByID(id string) (*app.App, bool)
	WaitFor(ctx context.Context, pos uint64) error
}

// Secrets opens an app's sealed secret.
type Secrets interface {
	Open(sealed, associated []byte) ([]byte, error)
}

// DispatchConfig configures the Dispatcher.
type DispatchConfig struct {
	// Concurrency bounds the sends in flight. Default 64.
	Concurrency int
	// SendTimeout bounds one channel send. Default 15 s.
	SendTimeout time.Duration
	// Logger, default slog.Default().
	Logger *slog.Logger
}

// Dispatcher moves accepted messages to their first channel: it appends
// the attempt's "sending" event at the expected revision (the ledger is the
// lock: if another runner started the attempt, this one does not send),
// hands the push to the channel and records "sent" or "failed" with the
// channel's reason.
//
// Retries, ack timeouts, failover, schedules and expiry build on it in the
// delivery sagas; today a failed attempt is final.
type Dispatcher struct {
	cfg      DispatchConfig
	ledger   ledger.Store
	cmd      *commands.Handler
	apps     Apps
	secrets  Secrets
	channels map[string]channels.Channel
	store    projections.Store
}

// NewDispatcher returns a dispatcher over the given channels (by Name()).
// Its checkpoint lives in store.
func NewDispatcher(cfg DispatchConfig, l ledger.Store, cmd *commands.Handler, apps Apps, secrets Secrets, store projections.Store, chans ...channels.Channel) (*Dispatcher, error) {
	if l == nil || cmd == nil || apps == nil || secrets == nil || store == nil {
		return nil, errors.New("sagas: dispatcher needs a ledger, commands, apps, secrets and a store")
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := map[string]channels.Channel{}
	for _, c := range chans {
		m[c.Name()] = c
	}
	return &Dispatcher{cfg: cfg, ledger: l, cmd: cmd, apps: apps, secrets: secrets, channels: m, store: store}, nil
}

// dispatchCheckpoint names the dispatcher's checkpoint in the store.
const dispatchCheckpoint = "dispatcher"

// Run dispatches until ctx ends. Each batch of accepted messages is sent
// concurrently; the checkpoint moves past a batch once all of it is decided.
// After a crash a batch is seen again: messages already past "accepted" are
// skipped by the expected-revision append.
func (d *Dispatcher) Run(ctx context.Context) error {
	from, err := projections.LoadCheckpoint(d.store, dispatchCheckpoint)
	if err != nil {
		return err
	}
	sub, err := d.ledger.Subscribe(ctx, from, ledger.Filter{TypePrefixes: []string{message.TypeAccepted}})
	if err != nil {
		return err
	}
	defer sub.Close()
	sem := make(chan struct{}, d.cfg.Concurrency)
	for {
		evs, err := sub.Recv(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dispatcher: %w", err)
		}
		var wg sync.WaitGroup
		for _, re := range evs {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := d.dispatch(ctx, re); err != nil && ctx.Err() == nil {
					d.cfg.Logger.Error("dispatch", "stream", re.Stream, "err", err)
				}
			}()
		}
		wg.Wait()
		if ctx.Err() != nil {
			return nil
		}
		last := evs[len(evs)-1].Position
		if err := d.store.Update(func(w projections.Writer) error { return projections.SetCheckpoint(w, dispatchCheckpoint, last) }); err != nil {
			return err
		}
	}
}

func (d *Dispatcher) dispatch(ctx context.Context, re ledger.RecordedEvent) error {
	e, err := message.Decode(re.Type, re.Data)
	if err != nil {
		return err
	}
	acc := e.(message.Accepted)
	if acc.SendAt != nil && acc.SendAt.After(acc.At) {
		return nil // scheduled: the delivery sagas fire it at its time
	}
	a, ok := d.apps.ByID(acc.AppID)
	if !ok {
		return d.fail(ctx, acc.MessageID, 0, "", "unknown_app")
	}
	name, ok := d.pick(a)
	if !ok {
		return d.fail(ctx, acc.MessageID, 0, "", "no_channel")
	}
	m, res, err := d.cmd.Message(ctx, acc.MessageID, message.StartAttempt{Channel: name})
	if errors.Is(err, message.ErrInvalidTransition) || errors.Is(err, message.ErrPastExpiry) {
		return nil // another runner owns it, or it is already past this step
	}
	if err != nil {
		return err
	}
	if len(res.Events) == 0 {
		return nil
	}
	secret, err := d.secrets.Open(a.SecretCiphertext, []byte(a.ID))
	if err != nil {
		return d.fail(ctx, m.ID, m.Attempt, name, "secret_unavailable")
	}
	push := channels.Push{
		MessageID: m.ID, AppID: m.AppID, Attempt: m.Attempt, Priority: m.Priority, CollapseID: m.CollapseID,
		ExpiresAt: m.ExpiresAt, Settings: a.Channels[name].Settings, Secret: secret, Data: m.Data,
	}
	if m.Notification != nil {
		push.Title, push.Body = m.Notification.Title, m.Notification.Body
	}
	for _, id := range m.Targets {
		push.Targets = append(push.Targets, channels.Target{DeviceID: id})
	}
	sctx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
	result, sendErr := d.channels[name].Send(sctx, push)
	cancel()
	if sendErr != nil {
		class, se := channels.Classify(sendErr)
		reason, status := "error", 0
		if se != nil {
			reason, status = se.Reason, se.Status
		}
		_, _, err = d.cmd.Message(ctx, m.ID, message.RecordFailure{Attempt: m.Attempt, Channel: name, Reason: reason, Status: status,
			Class: class.String(), Retryable: class == channels.Transient, Final: true})
		return ignoreSettled(err)
	}
	_, _, err = d.cmd.Message(ctx, m.ID, message.RecordSent{Attempt: m.Attempt, Channel: name, ProviderID: result.ProviderMessageID, Accepted: result.Accepted})
	return ignoreSettled(err)
}

// pick returns the app's first enabled channel (by priority) that this
// node can deliver through.
func (d *Dispatcher) pick(a *app.App) (string, bool) {
	for _, name := range a.ChannelOrder() {
		if _, ok := d.channels[name]; ok {
			return name, true
		}
	}
	return "", false
}

func (d *Dispatcher) fail(ctx context.Context, id string, attempt int, ch, reason string) error {
	_, _, err := d.cmd.Message(ctx, id, message.RecordFailure{Attempt: attempt, Channel: ch, Reason: reason, Final: true})
	return ignoreSettled(err)
}

// ignoreSettled drops errors saying the message already moved on (expired,
// cancelled or recorded by another runner).
func ignoreSettled(err error) error {
	if errors.Is(err, message.ErrInvalidTransition) || errors.Is(err, message.ErrWrongAttempt) {
		return nil
	}
	return err
}
