package projections

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/domain/message"
)

// ChannelCounts counts what happened on one channel.
type ChannelCounts struct {
	Attempts  int `json:"attempts"`
	Sent      int `json:"sent"`
	Failed    int `json:"failed"`
	Delivered int `json:"delivered"`
	Opened    int `json:"opened"`
}

// MessageStatus is the status read model of one message.
type MessageStatus struct {
	ID           string                    `json:"id"`
	AppID        string                    `json:"app_id"`
	State        message.State             `json:"state"`
	AcceptedAt   time.Time                 `json:"accepted_at"`
	UpdatedAt    time.Time                 `json:"updated_at"`
	SendAt       *time.Time                `json:"send_at,omitempty"`
	ExpiresAt    time.Time                 `json:"expires_at"`
	TargetCount  int                       `json:"target_count"`
	Attempt      int                       `json:"attempt"`
	Channel      string                    `json:"channel,omitempty"`
	LastError    string                    `json:"last_error,omitempty"`
	FinalFailure bool                      `json:"final_failure,omitempty"`
	Counts       map[message.State]int     `json:"counts"`
	Channels     map[string]*ChannelCounts `json:"channels"`
	Revision     uint64                    `json:"revision"`
}

// FoldStatus folds one recorded message event into s. The API uses it on a
// message's stream for an always-current answer; the projection uses it for
// listings.
func FoldStatus(s *MessageStatus, re ledger.RecordedEvent) error {
	e, err := message.Decode(re.Type, re.Data)
	if err != nil {
		return err
	}
	if s.Counts == nil {
		s.Counts = map[message.State]int{}
		s.Channels = map[string]*ChannelCounts{}
	}
	ch := func(name string) *ChannelCounts {
		if name == "" {
			return &ChannelCounts{} // failed before any channel was chosen
		}
		c := s.Channels[name]
		if c == nil {
			c = &ChannelCounts{}
			s.Channels[name] = c
		}
		return c
	}
	var st message.State
	switch e := e.(type) {
	case message.Accepted:
		s.ID, s.AppID, s.AcceptedAt, s.UpdatedAt = e.MessageID, e.AppID, e.At, e.At
		s.ExpiresAt, s.TargetCount, s.SendAt = e.ExpiresAt, e.TargetCount, e.SendAt
		st = message.StateAccepted
	case message.Scheduled:
		st, s.UpdatedAt = message.StateScheduled, e.At
	case message.Sending:
		st, s.UpdatedAt, s.Attempt, s.Channel = message.StateSending, e.At, e.Attempt, e.Channel
		ch(e.Channel).Attempts++
	case message.Sent:
		st, s.UpdatedAt = message.StateSent, e.At
		ch(e.Channel).Sent++
	case message.Delivered:
		st, s.UpdatedAt, s.FinalFailure = message.StateDelivered, e.At, false
		ch(e.Channel).Delivered++
	case message.DeliveredBatch:
		st, s.UpdatedAt, s.FinalFailure = message.StateDelivered, e.At, false
		ch(e.Channel).Delivered += len(e.DeviceIDs)
		s.Counts[st] += len(e.DeviceIDs) - 1 // one per device; the common increment below adds the last
	case message.Opened:
		st, s.UpdatedAt, s.FinalFailure = message.StateOpened, e.At, false
		ch(e.Channel).Opened++
	case message.Failed:
		// A give-up after a recorded failure closes the same attempt: it is
		// not a second failure on the channel.
		giveUp := s.State == message.StateFailed && !s.FinalFailure && e.Final && e.Attempt == s.Attempt
		st, s.UpdatedAt, s.LastError, s.FinalFailure = message.StateFailed, e.At, e.Reason, e.Final
		if !giveUp {
			ch(e.Channel).Failed++
		}
	case message.ResendRequested:
		// A new attempt cycle: the state stays, the final flag clears, and
		// no state was entered, so no count moves.
		s.UpdatedAt, s.FinalFailure, s.Revision = e.At, false, re.Revision
		return nil
	case message.Expired:
		st, s.UpdatedAt = message.StateExpired, e.At
	case message.Cancelled:
		st, s.UpdatedAt = message.StateCancelled, e.At
	}
	s.Counts[st]++
	// A delivery to a second device after an open leaves the message opened.
	if !(st == message.StateDelivered && s.State == message.StateOpened) {
		s.State = st
	}
	s.Revision = re.Revision
	return nil
}

// Messages is the message status projection: the status of every message,
// listable per app by time and by state.
type Messages struct{}

const msPrefix = "ms"

func (Messages) Name() string   { return "message-status" }
func (Messages) Prefix() []byte { return []byte(msPrefix + "\x00") }
func (Messages) Filter() ledger.Filter {
	return ledger.Filter{StreamPrefixes: []string{message.StreamPrefix}}
}

func msKey(id string) []byte { return key(msPrefix, "m", id) }
func msTimeKey(app string, at time.Time, id string) []byte {
	return key(msPrefix, "t", app, be8(uint64(at.UnixNano())), id)
}
func msStateKey(app string, st message.State, at time.Time, id string) []byte {
	return key(msPrefix, "s", app, string(st), be8(uint64(at.UnixNano())), id)
}

// Apply implements Projection. A message with several events in the batch
// is read and written once: its status is folded in memory and its index
// entries are moved from its state before the batch to its state after.
func (Messages) Apply(w Writer, events []ledger.RecordedEvent) error {
	type folding struct {
		s       MessageStatus
		prev    message.State // before the batch
		changed bool
	}
	batch := map[string]*folding{}
	var order []string
	for _, re := range events {
		id := re.Stream[len(message.StreamPrefix):]
		f := batch[id]
		if f == nil {
			f = &folding{}
			if re.Revision > 0 { // a message's first event needs no lookup
				old, err := w.Get(msKey(id))
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					return err
				default:
					if err := json.Unmarshal(old, &f.s); err != nil {
						return fmt.Errorf("message %s: %w", id, err)
					}
				}
			}
			f.prev = f.s.State
			batch[id] = f
			order = append(order, id)
		}
		if f.s.State != message.StateNone && re.Revision <= f.s.Revision {
			continue // already folded
		}
		if err := FoldStatus(&f.s, re); err != nil {
			return fmt.Errorf("message %s@%d: %w", id, re.Revision, err)
		}
		f.changed = true
	}
	for _, id := range order {
		f := batch[id]
		if !f.changed {
			continue
		}
		s := &f.s
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if err := w.Set(msKey(id), b); err != nil {
			return err
		}
		if f.prev == message.StateNone {
			if err := w.Set(msTimeKey(s.AppID, s.AcceptedAt, id), nil); err != nil {
				return err
			}
		}
		if f.prev != s.State {
			if f.prev != message.StateNone {
				if err := w.Delete(msStateKey(s.AppID, f.prev, s.AcceptedAt, id)); err != nil {
					return err
				}
			}
			if err := w.Set(msStateKey(s.AppID, s.State, s.AcceptedAt, id), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// MessageQuery selects messages of an app, newest first.
type MessageQuery struct {
	AppID string
	State message.State // optional
	Since time.Time     // optional, inclusive
	Until time.Time     // optional, exclusive
	Limit int           // default 50, at most 1000
	After string        // page token from a previous page
}

// ErrBadPageToken: the page token is not one this server issued.
var ErrBadPageToken = errors.New("projections: bad page token")

// ListMessages returns one page of messages and the token of the next page
// ("" when there is none).
func ListMessages(st Store, q MessageQuery) ([]MessageStatus, string, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	if q.Limit > 1000 {
		q.Limit = 1000
	}
	var base []byte
	if q.State != "" {
		base = key(msPrefix, "s", q.AppID, string(q.State), "")
	} else {
		base = key(msPrefix, "t", q.AppID, "")
	}
	lower, upper := base, PrefixEnd(base)
	if !q.Since.IsZero() {
		lower = append(append([]byte{}, base...), be8(uint64(q.Since.UnixNano()))...)
	}
	if !q.Until.IsZero() {
		upper = append(append([]byte{}, base...), be8(uint64(q.Until.UnixNano()))...)
	}
	if q.After != "" {
		tok, err := base64.RawURLEncoding.DecodeString(q.After)
		if err != nil || len(tok) < 9 {
			return nil, "", ErrBadPageToken
		}
		after := append(append([]byte{}, base...), tok...)
		if string(after) < string(upper) {
			upper = after
		}
	}
	var ids []string
	var lastTok []byte
	err := st.Scan(lower, upper, true, func(k, _ []byte) bool {
		rest := k[len(base):]
		if len(rest) < 9 {
			return true
		}
		ids = append(ids, string(rest[9:]))
		lastTok = append(lastTok[:0], rest...)
		return len(ids) < q.Limit
	})
	if err != nil {
		return nil, "", err
	}
	out := make([]MessageStatus, 0, len(ids))
	for _, id := range ids {
		v, err := st.Get(msKey(id))
		if err != nil {
			return nil, "", fmt.Errorf("message %s: %w", id, err)
		}
		var s MessageStatus
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, "", err
		}
		out = append(out, s)
	}
	next := ""
	if len(ids) == q.Limit {
		next = base64.RawURLEncoding.EncodeToString(lastTok)
	}
	return out, next, nil
}
