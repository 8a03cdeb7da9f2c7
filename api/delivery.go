package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/projections"
)

// ReasonRequest is the optional body of cancel and resend.
type ReasonRequest struct {
	Reason string `json:"reason,omitempty"`
}

func (s *Server) reason(c echo.Context) (string, error) {
	body, err := readBody(c)
	if err != nil {
		return "", err
	}
	var r ReasonRequest
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := decodeStrict(body, &r); err != nil {
			return "", err
		}
	}
	if len(r.Reason) > 200 {
		return "", problem(http.StatusUnprocessableEntity, SlugInvalidRequest, "Invalid request", "reason over 200 bytes")
	}
	return r.Reason, nil
}

// postCancel cancels a message that was not sent yet (accepted, or
// scheduled and not yet due).
func (s *Server) postCancel(c echo.Context) error {
	reason, err := s.reason(c)
	if err != nil {
		return err
	}
	if _, _, err := s.loadMessage(c); err != nil {
		return err
	}
	id := c.Param("id")
	if _, _, err := s.deps.Commands.Message(c.Request().Context(), id, message.Cancel{Reason: reason}); err != nil {
		return err
	}
	return s.answerStatus(c)
}

// postResend starts a new attempt cycle of a message that was sent and not
// acknowledged, or that failed, when the app's delivery policy allows it
// (before expiry, fewer than max_resends resends, a channel available).
func (s *Server) postResend(c echo.Context) error {
	reason, err := s.reason(c)
	if err != nil {
		return err
	}
	evs, st, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	var p policy.Progress
	if err := commands.FoldProgress(&p, evs); err != nil {
		return err
	}
	a, ok := s.deps.Apps.ByID(st.AppID)
	if !ok {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such app")
	}
	cfg := s.policies.For(a)
	now := s.cfg.Now()
	env := policy.Env{Now: now, Channels: cfg.Failover.Stats(a.Channels, nil, now)}
	if _, err := cfg.Resend(&p, env); err != nil {
		return problem(http.StatusConflict, SlugResendNotAllowed, "Resend not allowed", strings.TrimPrefix(err.Error(), "policy: resend not allowed: "))
	}
	rev := int64(evs[len(evs)-1].Revision)
	_, res, err := s.deps.Commands.MessageAt(c.Request().Context(), c.Param("id"), &p.Message, rev, message.Resend{Reason: reason})
	if errors.Is(err, commands.ErrStale) {
		return problem(http.StatusConflict, SlugConflict, "Conflict", "the message changed while the resend was decided; retry")
	}
	if err != nil {
		return err
	}
	// Appended at the revision read: the status read plus the new events
	// is the status now.
	for _, re := range res.Events {
		if err := projections.FoldStatus(&st, re); err != nil {
			return err
		}
	}
	return c.JSON(http.StatusAccepted, st)
}

// answerStatus answers 202 with the message's status, read again from the
// ledger (a command that retried may have seen newer events).
func (s *Server) answerStatus(c echo.Context) error {
	_, st, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, st)
}

// PolicyView answers the policy endpoints: the policy in force (the app's
// own read onto the platform's defaults) and the app's own part.
type PolicyView struct {
	AppID     string          `json:"app_id"`
	Effective policy.Config   `json:"effective"`
	Custom    json.RawMessage `json:"custom"`
}

func (s *Server) policyView(a *app.App) PolicyView {
	v := PolicyView{AppID: a.ID, Effective: s.policies.For(a), Custom: a.Policy}
	if len(v.Custom) == 0 {
		v.Custom = json.RawMessage("null")
	}
	return v
}

func (s *Server) getPolicy(c echo.Context) error {
	a, ok := s.deps.Apps.ByID(c.Param("id"))
	if !ok {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such app")
	}
	return c.JSON(http.StatusOK, s.policyView(a))
}

// putPolicy sets the app's delivery policy. The body is read onto the
// platform's defaults and must validate; every problem is listed.
func (s *Server) putPolicy(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	if len(body) > app.MaxPolicySize {
		return problem(http.StatusRequestEntityTooLarge, SlugPayloadTooLarge, "Payload too large", "a policy is at most 16 KiB")
	}
	if !json.Valid(body) {
		return problem(http.StatusBadRequest, SlugMalformedJSON, "Malformed JSON", "the body is not valid JSON")
	}
	if _, err := policy.Parse(body, s.policies.Default()); err != nil {
		return invalidPolicy(err)
	}
	return s.setPolicy(c, body)
}

func (s *Server) deletePolicy(c echo.Context) error { return s.setPolicy(c, nil) }

func (s *Server) setPolicy(c echo.Context, pol json.RawMessage) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	if _, ok := s.deps.Apps.ByID(id); !ok {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such app")
	}
	a, res, err := s.deps.Commands.App(ctx, id, app.SetPolicy{Policy: pol})
	if err != nil {
		return err
	}
	if res.Position > 0 {
		if err := s.deps.Apps.WaitFor(ctx, res.Position); err != nil {
			return err
		}
	}
	return c.JSON(http.StatusOK, s.policyView(&a))
}

// invalidPolicy lists a policy's problems, each with a JSON pointer.
func invalidPolicy(err error) error {
	pe := problem(http.StatusUnprocessableEntity, SlugInvalidPolicy, "Invalid delivery policy", err.Error())
	var list interface{ Unwrap() []error }
	if errors.As(err, &list) {
		for _, e := range list.Unwrap() {
			var ce *policy.ConfigError
			if errors.As(e, &ce) {
				pe.fields = append(pe.fields, ProblemField{Pointer: pointerOf(ce.Path), Detail: ce.Problem})
			}
		}
	}
	pe.cause = err
	return pe
}

// pointerOf turns a policy path ("channels[apns].retry.jitter") into a JSON
// pointer ("/channels/apns/retry/jitter").
func pointerOf(path string) string {
	r := strings.NewReplacer("[", "/", "]", "", ".", "/", `"`, "", "~", "~0")
	return "/" + r.Replace(path)
}

// DeviceDelivery answers GET /v1/messages/{id}/devices/{device}: what
// happened to the message on one device, from the ledger.
type DeviceDelivery struct {
	MessageID string `json:"message_id"`
	DeviceID  string `json:"device_id"`
	// Targeted: the device is one the message was sent to (for a
	// broadcast, every device of the app is).
	Targeted bool `json:"targeted"`
	// DeliveredAt is when the device acknowledged the message, OpenedAt
	// when the user opened it there; absent when it did not (yet).
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
	OpenedAt    *time.Time `json:"opened_at,omitempty"`
}

func (s *Server) getMessageDevice(c echo.Context) error {
	evs, _, err := s.loadMessage(c)
	if err != nil {
		return err
	}
	var p policy.Progress
	if err := commands.FoldProgress(&p, evs); err != nil {
		return err
	}
	m := &p.Message
	dev := c.Param("device")
	out := DeviceDelivery{MessageID: m.ID, DeviceID: dev, Targeted: m.Audience.Broadcast || slices.Contains(m.Targets, dev)}
	if at, ok := m.Delivered[dev]; ok {
		out.DeliveredAt = &at
	}
	if at, ok := m.Opened[dev]; ok {
		out.OpenedAt = &at
	}
	return c.JSON(http.StatusOK, out)
}
