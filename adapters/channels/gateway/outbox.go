package gatewaych

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pushledger/pushledger/gateway/wire"
	"github.com/pushledger/pushledger/projections"
)

// Outbox holds the pushes that devices have not acknowledged yet, so that
// a device that is offline gets them, oldest first, when it connects
// (store-and-forward), until they expire.
//
// Pushes to listed devices are kept per device. A broadcast is kept once
// per app; a device that connects gets every live broadcast of its app it
// has not acknowledged (an acknowledgement of a broadcast is kept, per
// device, until the broadcast expires).
//
// It lives in the read-model store and is written without fsync: an entry
// lost in a crash is sent again by the delivery sagas, whose ack timeout
// resends any push the device did not acknowledge.
//
//	gwo \x00 <app> \x00 <device> \x00 <seq u64>      -> entry   (per device, in order)
//	gwx \x00 <app> \x00 <device> \x00 <message id>   -> seq     (per device, by id)
//	gwb \x00 <app> \x00 <seq u64>                    -> entry   (broadcasts, in order)
//	gwy \x00 <app> \x00 <message id>                 -> seq     (broadcasts, by id)
//	gwa \x00 <app> \x00 <message id> \x00 <device>   -> ""      (broadcasts acknowledged, until they expire)
//
// entry: message id (16) | expires at, unix ns (8, 0 = never) | flags (1) | payload
type Outbox struct {
	store projections.Store
	seq   atomic.Uint64
	// MaxPerDevice bounds the pushes kept for one device; beyond it the
	// oldest is dropped (its message's ack timeout resends it later).
	MaxPerDevice int
}

// Entry is a push waiting in the outbox.
type Entry struct {
	ID        wire.MessageID
	ExpiresAt time.Time
	Flags     wire.PushFlags
	Payload   []byte
}

// NewOutbox returns the outbox kept in store. Sequence numbers continue
// from the time (nanoseconds), so they grow across restarts.
func NewOutbox(store projections.Store) *Outbox {
	o := &Outbox{store: store, MaxPerDevice: 1000}
	o.seq.Store(uint64(time.Now().UnixNano()))
	return o
}

func key(kind string, parts ...string) []byte {
	var b bytes.Buffer
	b.WriteString(kind)
	for _, p := range parts {
		b.WriteByte(0)
		b.WriteString(p)
	}
	b.WriteByte(0)
	return b.Bytes()
}

func seqKey(prefix []byte, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte{}, prefix...), seq)
}

func encodeEntry(e Entry) []byte {
	b := make([]byte, 0, 25+len(e.Payload))
	b = append(b, e.ID[:]...)
	var exp uint64
	if !e.ExpiresAt.IsZero() {
		exp = uint64(e.ExpiresAt.UnixNano())
	}
	b = binary.BigEndian.AppendUint64(b, exp)
	b = append(b, byte(e.Flags))
	return append(b, e.Payload...)
}

func decodeEntry(v []byte) (Entry, error) {
	if len(v) < 25 {
		return Entry{}, fmt.Errorf("gatewaych: outbox entry of %d bytes", len(v))
	}
	var e Entry
	copy(e.ID[:], v[:16])
	if exp := binary.BigEndian.Uint64(v[16:24]); exp != 0 {
		e.ExpiresAt = time.Unix(0, int64(exp))
	}
	e.Flags = wire.PushFlags(v[24])
	e.Payload = append([]byte(nil), v[25:]...)
	return e, nil
}

func (e Entry) expired(now time.Time) bool { return !e.ExpiresAt.IsZero() && !now.Before(e.ExpiresAt) }

// Put keeps e for each of devices of app, in one write, unless the device
// already has a push of that message waiting.
func (o *Outbox) Put(app string, devices []string, e Entry) error {
	return o.store.Update(func(w projections.Writer) error {
		for _, d := range devices {
			if err := o.put(w, key("gwo", app, d), append(key("gwx", app, d), e.ID[:]...), e); err != nil {
				return err
			}
		}
		return nil
	})
}

// PutBroadcast keeps e for every device of app.
func (o *Outbox) PutBroadcast(app string, e Entry) error {
	return o.store.Update(func(w projections.Writer) error {
		return o.put(w, key("gwb", app), append(key("gwy", app), e.ID[:]...), e)
	})
}

// put keeps e under the next sequence number after prefix, indexed by idx,
// unless idx exists.
func (o *Outbox) put(w projections.Writer, prefix, idx []byte, e Entry) error {
	if _, err := w.Get(idx); err == nil {
		return nil
	} else if !errors.Is(err, projections.ErrNotFound) {
		return err
	}
	seq := o.seq.Add(1)
	if err := w.Set(seqKey(prefix, seq), encodeEntry(e)); err != nil {
		return err
	}
	return w.Set(idx, binary.BigEndian.AppendUint64(nil, seq))
}

// Pending calls fn for every live push waiting for device of app: its own,
// oldest first, then the live broadcasts it has not acknowledged, oldest
// first. Its expired pushes are removed on the way, and the oldest beyond
// MaxPerDevice are dropped.
func (o *Outbox) Pending(app, device string, now time.Time, fn func(Entry) bool) error {
	var own, bcast []Entry
	var stale [][]byte
	prefix := key("gwo", app, device)
	err := o.store.Scan(prefix, projections.PrefixEnd(prefix), false, func(k, v []byte) bool {
		e, err := decodeEntry(v)
		if err != nil || e.expired(now) {
			stale = append(stale, append([]byte(nil), k...), append(key("gwx", app, device), v[:min(16, len(v))]...))
			return true
		}
		own = append(own, e)
		return true
	})
	if err != nil {
		return err
	}
	if extra := len(own) - o.MaxPerDevice; o.MaxPerDevice > 0 && extra > 0 {
		if err := o.removeByID(app, device, own[:extra]); err != nil {
			return err
		}
		own = own[extra:]
	}
	// Expired broadcasts are skipped here and removed by Sweep, with their
	// acknowledgements: they are the app's, not this device's.
	bprefix := key("gwb", app)
	err = o.store.Scan(bprefix, projections.PrefixEnd(bprefix), false, func(_, v []byte) bool {
		if e, err := decodeEntry(v); err == nil && !e.expired(now) {
			bcast = append(bcast, e)
		}
		return true
	})
	if err != nil {
		return err
	}
	if len(stale) > 0 {
		if err := o.store.Update(func(w projections.Writer) error {
			for _, k := range stale {
				if err := w.Delete(k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	for _, e := range own {
		if !fn(e) {
			return nil
		}
	}
	for _, e := range bcast {
		if _, err := o.store.Get(append(ackPrefix(app, e.ID[:]), device...)); err == nil {
			continue // acknowledged
		} else if !errors.Is(err, projections.ErrNotFound) {
			return err
		}
		if !fn(e) {
			return nil
		}
	}
	return nil
}

func (o *Outbox) removeByID(app, device string, es []Entry) error {
	return o.store.Update(func(w projections.Writer) error {
		for _, e := range es {
			if err := removePush(w, app, device, e.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

// removePush removes the push of message id to device, if it waits.
func removePush(w projections.Writer, app, device string, id wire.MessageID) error {
	idx := append(key("gwx", app, device), id[:]...)
	v, err := w.Get(idx)
	switch {
	case errors.Is(err, projections.ErrNotFound):
		return nil // already acknowledged, or an expired broadcast
	case err != nil:
		return err
	}
	if len(v) == 8 {
		if err := w.Delete(seqKey(key("gwo", app, device), binary.BigEndian.Uint64(v))); err != nil {
			return err
		}
	}
	return w.Delete(idx)
}

// Ack removes the pushes of ids waiting for device of app, and remembers
// the acknowledged broadcasts among them until they expire.
func (o *Outbox) Ack(app, device string, ids []wire.MessageID) error {
	return o.AckMany(app, map[string][]wire.MessageID{device: ids})
}

// AckMany is Ack for many devices of app, in one write.
func (o *Outbox) AckMany(app string, acks map[string][]wire.MessageID) error {
	return o.store.Update(func(w projections.Writer) error {
		// Broadcasts of app, looked up once per id: an id that is one is
		// no push to a device, so its acks need no index lookup.
		live := map[wire.MessageID]bool{}
		for device, ids := range acks {
			for _, id := range ids {
				isLive, seen := live[id]
				if !seen {
					_, err := w.Get(append(key("gwy", app), id[:]...))
					if err != nil && !errors.Is(err, projections.ErrNotFound) {
						return err
					}
					isLive = err == nil
					live[id] = isLive
				}
				if isLive {
					if err := w.Set(append(ackPrefix(app, id[:]), device...), nil); err != nil {
						return err
					}
					continue
				}
				if err := removePush(w, app, device, id); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// ackPrefix is the prefix of the acknowledgements of broadcast id of app.
func ackPrefix(app string, id []byte) []byte {
	return append(append(key("gwa", app), id...), 0)
}

// Sweep removes every expired push from the outbox, those of devices that
// never connect again included, and the acknowledgements of expired
// broadcasts. It returns how many pushes it removed.
func (o *Outbox) Sweep(now time.Time) (int, error) {
	var stale [][]byte
	var ended [][]byte
	removed := 0
	visit := func(prefix []byte, index func(k, v []byte) []byte, broadcast bool) error {
		return o.store.Scan(prefix, projections.PrefixEnd(prefix), false, func(k, v []byte) bool {
			e, err := decodeEntry(v)
			if err == nil && !e.expired(now) {
				return true
			}
			removed++
			stale = append(stale, append([]byte(nil), k...), index(k, v))
			if broadcast && len(v) >= 16 {
				ended = append(ended, ackPrefix(appOf(k), v[:16]))
			}
			return true
		})
	}
	// gwo \0 app \0 device \0 seq: the index key is gwx \0 app \0 device \0 id.
	err := visit([]byte("gwo\x00"), func(k, v []byte) []byte {
		idx := append([]byte("gwx"), k[3:len(k)-8]...)
		return append(idx, v[:min(16, len(v))]...)
	}, false)
	if err != nil {
		return 0, err
	}
	// gwb \0 app \0 seq: the index key is gwy \0 app \0 id.
	err = visit([]byte("gwb\x00"), func(k, v []byte) []byte {
		idx := append([]byte("gwy"), k[3:len(k)-8]...)
		return append(idx, v[:min(16, len(v))]...)
	}, true)
	if err != nil {
		return 0, err
	}
	if len(stale) > 0 {
		err := o.store.Update(func(w projections.Writer) error {
			for _, k := range stale {
				if err := w.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	for _, p := range ended {
		if err := o.store.DeletePrefix(p); err != nil {
			return 0, err
		}
	}
	return removed, nil
}

// appOf returns the app of a gwo or gwb key ("gw?" \0 app \0 ...).
func appOf(k []byte) string {
	rest := k[4:]
	if i := bytes.IndexByte(rest, 0); i >= 0 {
		return string(rest[:i])
	}
	return ""
}
