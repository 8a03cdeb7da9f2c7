package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/api/signing"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
	"github.com/pushledger/pushledger/projections"
)

// ProblemBase prefixes every problem type URI.
const ProblemBase = "https://pushledger.dev/problems/"

// Problem is an RFC 9457 problem detail.
type Problem struct {
	Type     string         `json:"type"`
	Title    string         `json:"title"`
	Status   int            `json:"status"`
	Detail   string         `json:"detail,omitempty"`
	Instance string         `json:"instance,omitempty"`
	Errors   []ProblemField `json:"errors,omitempty"`
}

// ProblemField points at one invalid part of a request.
type ProblemField struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// problemError is an error the API answers with a specific problem.
type problemError struct {
	slug   string
	title  string
	status int
	detail string
	fields []ProblemField
	cause  error
}

func (e *problemError) Error() string {
	if e.detail != "" {
		return e.title + ": " + e.detail
	}
	return e.title
}
func (e *problemError) Unwrap() error { return e.cause }

func problem(status int, slug, title, detail string) *problemError {
	return &problemError{slug: slug, title: title, status: status, detail: detail}
}

// Problem slugs the API answers with (docs/api.md lists them).
const (
	SlugPayloadTooLarge   = "payload-too-large"
	SlugMalformedJSON     = "malformed-json"
	SlugInvalidRequest    = "invalid-request"
	SlugUnknownApp        = "unknown-app"
	SlugBadSignature      = "bad-signature"
	SlugStaleTimestamp    = "stale-timestamp"
	SlugReplayedNonce     = "replayed-nonce"
	SlugMissingCreds      = "missing-credentials"
	SlugMalformedCreds    = "malformed-credentials"
	SlugBlacklisted       = "blacklisted-target"
	SlugEmptyAudience     = "empty-audience"
	SlugNotFound          = "not-found"
	SlugConflict          = "conflict"
	SlugInvalidTransition = "invalid-transition"
	SlugBatchTooLarge     = "batch-too-large"
	SlugUnauthorized      = "unauthorized"
	SlugInternal          = "internal"
	SlugUnavailable       = "unavailable"
	SlugMethodNotAllowed  = "method-not-allowed"
	SlugBadPageToken      = "bad-page-token"
	SlugResendNotAllowed  = "resend-not-allowed"
	SlugInvalidPolicy     = "invalid-policy"
)

// toProblem maps any error to its problem: the one place errors become HTTP.
func toProblem(err error) *problemError {
	var pe *problemError
	if errors.As(err, &pe) {
		return pe
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return problem(404, SlugNotFound, "Not found", "no such route")
		case http.StatusMethodNotAllowed:
			return problem(405, SlugMethodNotAllowed, "Method not allowed", "")
		case http.StatusRequestEntityTooLarge:
			return problem(413, SlugPayloadTooLarge, "Payload too large", "")
		}
		return problem(he.Code, "http-"+strconv.Itoa(he.Code), http.StatusText(he.Code), fmt.Sprint(he.Message))
	}
	// Authentication problems get details written for the client, never the
	// error chain ("authenticate request: signing: ..."), which is the
	// server's own vocabulary.
	switch {
	case errors.Is(err, signing.ErrMissingHeaders):
		return problem(401, SlugMissingCreds, "Missing credentials", missingHeadersDetail(err))
	case errors.Is(err, signing.ErrMalformedHeader):
		return problem(401, SlugMalformedCreds, "Malformed credentials", malformedDetail(err))
	case errors.Is(err, signing.ErrUnknownApp):
		return problem(401, SlugUnknownApp, "Unknown app", "no app has this app key")
	case errors.Is(err, signing.ErrStaleTimestamp):
		return problem(401, SlugStaleTimestamp, "Stale timestamp", staleDetail(err))
	case errors.Is(err, signing.ErrReplayedNonce):
		return problem(401, SlugReplayedNonce, "Replayed nonce", "this nonce was already used within the timestamp window")
	case errors.Is(err, signing.ErrBadSignature):
		return problem(401, SlugBadSignature, "Bad signature", "the signature does not match the request")
	case errors.Is(err, signing.ErrBodyTooLarge):
		detail := "the body is too large"
		var be *signing.BodyTooLargeError
		if errors.As(err, &be) {
			detail = fmt.Sprintf("the body is over %d bytes", be.Limit)
		}
		return problem(413, SlugPayloadTooLarge, "Payload too large", detail)
	case errors.Is(err, projections.ErrEmptyAudience):
		return problem(422, SlugEmptyAudience, "Empty audience", err.Error())
	case errors.Is(err, projections.ErrBadPageToken):
		return problem(400, SlugBadPageToken, "Bad page token", "")
	case errors.Is(err, message.ErrNotFound), errors.Is(err, device.ErrNotFound), errors.Is(err, app.ErrNotFound), errors.Is(err, projections.ErrNotFound):
		return problem(404, SlugNotFound, "Not found", err.Error())
	case errors.Is(err, message.ErrInvalid), errors.Is(err, device.ErrInvalid), errors.Is(err, app.ErrInvalid):
		return problem(422, SlugInvalidRequest, "Invalid request", err.Error())
	case errors.Is(err, message.ErrInvalidTransition), errors.Is(err, device.ErrInvalidTransition), errors.Is(err, app.ErrInvalidTransition),
		errors.Is(err, message.ErrNotDue), errors.Is(err, message.ErrPastExpiry):
		return problem(409, SlugInvalidTransition, "Not allowed in the current state", err.Error())
	case errors.Is(err, commands.ErrConflict):
		return problem(409, SlugConflict, "Conflict", "too many concurrent changes; retry")
	}
	return &problemError{slug: SlugInternal, title: "Internal error", status: 500, cause: err}
}

// missingHeadersDetail names the absent authentication headers.
func missingHeadersDetail(err error) string {
	var me *signing.MissingHeadersError
	if !errors.As(err, &me) || len(me.Headers) == 0 {
		return "the authentication headers are missing"
	}
	if len(me.Headers) == 1 {
		return "the " + me.Headers[0] + " header is missing or empty"
	}
	return "the " + strings.Join(me.Headers, ", ") + " headers are missing or empty"
}

// malformedDetail says which header (or the query) is badly formed and why,
// without the header's value.
func malformedDetail(err error) string {
	var me *signing.MalformedError
	if !errors.As(err, &me) {
		return "an authentication header is badly formed"
	}
	if me.Field == "query" {
		return "the query string cannot be canonicalised: " + me.Reason
	}
	return me.Field + " " + me.Reason
}

// staleDetail gives the client's and the server's time and the window, so
// that the client can see how far its clock is off.
func staleDetail(err error) string {
	var se *signing.StaleTimestampError
	if !errors.As(err, &se) {
		return "X-Timestamp is outside the allowed window around the server clock"
	}
	off, dir := se.Now-se.Timestamp, "behind"
	if off < 0 {
		off, dir = -off, "ahead of"
	}
	return fmt.Sprintf("X-Timestamp %d is %d s %s the server clock (%d); at most %s s is allowed",
		se.Timestamp, off, dir, se.Now, strconv.FormatFloat(se.Window.Seconds(), 'f', -1, 64))
}

func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p := toProblem(err)
	if p.status >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	body := Problem{Type: ProblemBase + p.slug, Title: p.title, Status: p.status, Detail: p.detail, Instance: c.Request().URL.Path, Errors: p.fields}
	b, merr := json.Marshal(body)
	if merr != nil {
		s.log.Error("marshal problem", slog.Any("err", merr))
		return
	}
	c.Response().Header().Set(echo.HeaderContentType, "application/problem+json")
	c.Response().WriteHeader(p.status)
	_, _ = c.Response().Write(b)
}
