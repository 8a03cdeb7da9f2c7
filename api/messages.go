package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

// MessageRequest is one message of POST /v1/messages.
type MessageRequest struct {
	Audience       message.Audience      `json:"audience"`
	Notification   *message.Notification `json:"notification,omitempty"`
	Data           json.RawMessage       `json:"data,omitempty"`
	TTL            int64                 `json:"ttl,omitempty"` // seconds
	Priority       string                `json:"priority,omitempty"`
	CollapseID     string                `json:"collapse_id,omitempty"`
	SendAt         *time.Time            `json:"send_at,omitempty"`
	IdempotencyKey string                `json:"idempotency_key,omitempty"`
}

// BatchRequest is a batch of POST /v1/messages.
type BatchRequest struct {
	Messages []MessageRequest `json:"messages"`
}

// submission is the body of POST /v1/messages: a batch or one message.
type submission struct {
	Messages *[]MessageRequest `json:"messages"`
	MessageRequest
}

// AcceptedResponse answers POST /v1/messages (202).
type AcceptedResponse struct {
	MessageIDs []string `json:"message_ids"`
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return problem(http.StatusBadRequest, SlugMalformedJSON, "Malformed JSON", err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return problem(http.StatusBadRequest, SlugMalformedJSON, "Malformed JSON", "trailing data after the JSON value")
	}
	return nil
}

func readBody(c echo.Context) ([]byte, error) {
	b, err := io.ReadAll(c.Request().Body) // bounded by the signing middleware or adminAuth
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, problem(http.StatusRequestEntityTooLarge, SlugPayloadTooLarge, "Payload too large", fmt.Sprintf("the body is over %d bytes", tooLarge.Limit))
	}
	return b, err
}

func (s *Server) postMessages(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	// One strict decode serves both shapes: a batch has "messages", a single
	// message has its fields at the top level.
	var sub submission
	if err := decodeStrict(body, &sub); err != nil {
		return err
	}
	var reqs []MessageRequest
	pointer := func(i int) string { return "" }
	if sub.Messages != nil {
		if !reflect.ValueOf(sub.MessageRequest).IsZero() {
			return problem(http.StatusBadRequest, SlugMalformedJSON, "Malformed JSON", "a batch has only \"messages\"")
		}
		reqs = *sub.Messages
		pointer = func(i int) string { return "/messages/" + strconv.Itoa(i) }
		if len(reqs) == 0 {
			return problem(http.StatusUnprocessableEntity, SlugInvalidRequest, "Invalid request", "the batch is empty")
		}
		if len(reqs) > s.cfg.MaxBatch {
			return problem(http.StatusRequestEntityTooLarge, SlugBatchTooLarge, "Batch too large", fmt.Sprintf("a batch holds at most %d messages", s.cfg.MaxBatch))
		}
	} else {
		r := sub.MessageRequest
		if k := c.Request().Header.Get("Idempotency-Key"); k != "" && r.IdempotencyKey == "" {
			r.IdempotencyKey = k
		}
		reqs = []MessageRequest{r}
	}
	appID := appID(c)
	a, ok := s.deps.Apps.ByID(appID)
	if !ok {
		return problem(http.StatusUnauthorized, SlugUnknownApp, "Unknown app", "no app has this app key")
	}
	// Validate and resolve everything first: a batch is accepted whole or not at all.
	cmds := make([]prepared, len(reqs))
	for i, r := range reqs {
		cmd, err := s.prepare(a, r)
		if err != nil {
			var pe *problemError
			if !errors.As(err, &pe) {
				pe = toProblem(err)
			}
			pe.fields = append(pe.fields, ProblemField{Pointer: pointer(i), Detail: pe.detail})
			return pe
		}
		cmds[i] = cmd
	}
	ids, err := s.acceptAll(c.Request().Context(), cmds)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, AcceptedResponse{MessageIDs: ids})
}

// prepared is a message validated, resolved and decided, ready to append.
type prepared struct {
	cmd message.Accept
	evs []message.Event
}

// prepare validates one request, resolves its audience, gives it its
// message id and decides its acceptance.
func (s *Server) prepare(a *app.App, r MessageRequest) (prepared, error) {
	size := len(r.Data)
	if r.Notification != nil {
		size += len(r.Notification.Title) + len(r.Notification.Body)
	}
	if size > s.cfg.MaxPayload {
		return prepared{}, problem(http.StatusRequestEntityTooLarge, SlugPayloadTooLarge, "Payload too large",
			fmt.Sprintf("title, body and data take %d bytes; the limit is %d", size, s.cfg.MaxPayload))
	}
	if len(r.Data) > 0 && !json.Valid(r.Data) {
		return prepared{}, problem(http.StatusBadRequest, SlugMalformedJSON, "Malformed JSON", "data is not valid JSON")
	}
	if len(r.IdempotencyKey) > 255 {
		return prepared{}, problem(http.StatusUnprocessableEntity, SlugInvalidRequest, "Invalid request", "idempotency_key is longer than 255 bytes")
	}
	if namesNoTarget(r.Audience) {
		// Like an audience that selects no device: the same problem type,
		// whether nothing was named or nothing named is there.
		return prepared{}, problem(http.StatusUnprocessableEntity, SlugEmptyAudience, "Empty audience",
			"the audience names no target")
	}
	if err := r.Audience.Validate(); err != nil {
		return prepared{}, err
	}
	if bad := blacklistedTarget(a, r.Audience); bad != "" {
		return prepared{}, problem(http.StatusUnprocessableEntity, SlugBlacklisted, "Blacklisted target", bad+" is blacklisted for this app")
	}
	ids, n, err := s.reg.Resolve(a.ID, r.Audience, a)
	if err != nil {
		return prepared{}, err
	}
	if n == 0 {
		return prepared{}, projections.ErrEmptyAudience
	}
	cmd := message.Accept{
		AppID: a.ID, Audience: r.Audience, Targets: ids, TargetCount: n, Notification: r.Notification, Data: r.Data,
		Priority: r.Priority, CollapseID: r.CollapseID, TTL: time.Duration(r.TTL) * time.Second, SendAt: r.SendAt,
		IdempotencyKey: r.IdempotencyKey,
	}
	if cmd.IdempotencyKey != "" {
		cmd.MessageID = ledger.DeterministicID("idempotency", cmd.AppID, cmd.IdempotencyKey)
	} else {
		id, err := uuid.NewV7()
		if err != nil {
			return prepared{}, err
		}
		cmd.MessageID = id.String()
	}
	// The domain's own checks run now, so that a batch is rejected whole
	// before anything of it is appended; the decided events are appended as
	// they are.
	evs, err := s.deps.Commands.DecideAccept(cmd)
	if err != nil {
		return prepared{}, err
	}
	return prepared{cmd: cmd, evs: evs}, nil
}

// namesNoTarget reports an audience with no selector at all: absent, {},
// or only empty lists (tags included), and no broadcast. An audience naming
// more than one kind of selector, or tags with only none_of, is left to the
// domain's validation (invalid-request).
func namesNoTarget(aud message.Audience) bool {
	if aud.Broadcast || len(aud.DeviceIDs) > 0 || len(aud.Aliases) > 0 {
		return false
	}
	return aud.Tags == nil || len(aud.Tags.AllOf) == 0 && len(aud.Tags.AnyOf) == 0 && len(aud.Tags.NoneOf) == 0
}

func blacklistedTarget(a *app.App, aud message.Audience) string {
	for _, d := range aud.DeviceIDs {
		if a.Blacklisted(app.KindDevice, d) {
			return "device " + d
		}
	}
	for _, u := range aud.Aliases {
		if a.Blacklisted(app.KindUser, u) {
			return "user " + u
		}
	}
	if aud.Tags != nil {
		for _, t := range append(append([]string{}, aud.Tags.AllOf...), aud.Tags.AnyOf...) {
			if a.Blacklisted(app.KindGroup, t) {
				return "group " + t
			}
		}
	}
	return ""
}

// acceptWorkers bounds the appends one batch request keeps in flight.
const acceptWorkers = 256

// acceptAll appends every message concurrently, so that the ledger commits
// them in as few synced batches as it can, and returns their ids in order
// once all are durable.
func (s *Server) acceptAll(ctx context.Context, cmds []prepared) ([]string, error) {
	ids := make([]string, len(cmds))
	if len(cmds) == 1 {
		id, err := s.accept(ctx, cmds[0])
		ids[0] = id
		return ids, err
	}
	// A bounded pool: enough appends in flight to fill the ledger's group
	// commits, without a goroutine (and its stack growth) per message.
	errs := make([]error, len(cmds))
	var wg sync.WaitGroup
	var next atomic.Int64
	workers := min(len(cmds), acceptWorkers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cmds) {
					return
				}
				ids[i], errs[i] = s.accept(ctx, cmds[i])
			}
		}()
	}
	wg.Wait()
	return ids, errors.Join(errs...)
}

// accept appends one prepared message. With an idempotency key the message
// id is derived from (app, key): a repeat within the window finds the
// original and returns its id; after the window a new id is chained from
// the old and the message decided again under it.
func (s *Server) accept(ctx context.Context, p prepared) (string, error) {
	id := p.cmd.MessageID
	old, _, err := s.deps.Commands.AppendAccept(ctx, id, p.evs)
	for range 64 {
		if p.cmd.IdempotencyKey == "" || !errors.Is(err, commands.ErrExists) {
			return id, err
		}
		if old.AppID == p.cmd.AppID && old.IdempotencyKey == p.cmd.IdempotencyKey && s.cfg.Now().Sub(old.AcceptedAt) < s.cfg.IdempotencyWindow {
			return id, nil
		}
		id = ledger.DeterministicID("idempotency", p.cmd.AppID, p.cmd.IdempotencyKey, id)
		cmd := p.cmd
		cmd.MessageID = id
		old, _, err = s.deps.Commands.AcceptMessage(ctx, cmd)
	}
	return "", fmt.Errorf("idempotency key %q: too many generations", p.cmd.IdempotencyKey)
}

// MessageEvent is one entry of a message's history.
type MessageEvent struct {
	Revision uint64          `json:"revision"`
	Position uint64          `json:"position"`
	Type     string          `json:"type"`
	Recorded time.Time       `json:"recorded"`
	Data     json.RawMessage `json:"data"`
}

// loadMessage reads a message's events from the ledger; messages of other
// apps are reported as not found.
func (s *Server) loadMessage(c echo.Context) ([]ledger.RecordedEvent, projections.MessageStatus, error) {
	var st projections.MessageStatus
	id := c.Param("id")
	if _, err := uuid.Parse(id); err != nil {
		return nil, st, problem(http.StatusNotFound, SlugNotFound, "Not found", "no such message")
	}
	evs, err := s.deps.Ledger.ReadStream(c.Request().Context(), message.Stream(id), ledger.Forwards, 0, 0)
	if errors.Is(err, ledger.ErrStreamNotFound) {
		return nil, st, problem(http.StatusNotFound, SlugNotFound, "Not found", "no such message")
	}
	if err != nil {
		return nil, st, err
	}
	for _, e := range evs {
		if err := projections.FoldStatus(&st, e); err != nil {
			return nil, st, err
		}
	}
	if st.AppID != appID(c) {
		return nil, st, problem(http.StatusNotFound, SlugNotFound, "Not found", "no such message")
	}
	return evs, st, nil
}

func (s *Server) getMessage(c echo.Context) error {
	_, st, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) getMessageEvents(c echo.Context) error {
	evs, _, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	out := make([]MessageEvent, len(evs))
	for i, e := range evs {
		out[i] = MessageEvent{Revision: e.Revision, Position: e.Position, Type: e.Type, Recorded: e.Recorded, Data: e.Data}
	}
	return c.JSON(http.StatusOK, map[string]any{"message_id": c.Param("id"), "events": out})
}

func (s *Server) listMessages(c echo.Context) error {
	q := projections.MessageQuery{AppID: appID(c), State: message.State(c.QueryParam("status")), After: c.QueryParam("page_token")}
	if q.State != "" && !validState(q.State) {
		return problem(http.StatusBadRequest, SlugInvalidRequest, "Invalid request", "unknown status "+string(q.State))
	}
	var err error
	if q.Since, err = timeParam(c, "since"); err != nil {
		return err
	}
	if q.Until, err = timeParam(c, "until"); err != nil {
		return err
	}
	if l := c.QueryParam("limit"); l != "" {
		if q.Limit, err = strconv.Atoi(l); err != nil || q.Limit < 1 || q.Limit > 1000 {
			return problem(http.StatusBadRequest, SlugInvalidRequest, "Invalid request", "limit must be 1..1000")
		}
	}
	list, next, err := projections.ListMessages(s.deps.Store, q)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"messages": list, "next_page_token": next})
}

func validState(st message.State) bool {
	for _, s := range message.States() {
		if s == st {
			return true
		}
	}
	return false
}

func timeParam(c echo.Context, name string) (time.Time, error) {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return t, problem(http.StatusBadRequest, SlugInvalidRequest, "Invalid request", name+" must be an RFC 3339 time")
	}
	return t, nil
}
