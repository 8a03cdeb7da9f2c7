package signing

import (
	"bytes"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"
)

// credentialsKey is the echo.Context key of the verified Credentials.
const credentialsKey = "pushledger/api/signing.credentials"

// Middleware authenticates every request with Verify, using the configured
// MaxBody. See MiddlewareMaxBody.
func (v *Verifier) Middleware() echo.MiddlewareFunc {
	return v.MiddlewareMaxBody(v.maxBody)
}

// MiddlewareMaxBody is Middleware with a body limit of maxBody bytes instead
// of Config.MaxBody (zero or negative means Config.MaxBody), for routes such
// as batch endpoints that accept larger payloads. Nonces are shared with
// every other middleware of v.
//
// The middleware reads the whole body (at most maxBody bytes, else
// ErrBodyTooLarge), replaces r.Body with an in-memory copy the handler can
// read again, verifies the request, and stores the Credentials (with Secret
// cleared) for FromContext. It must run before anything that rewrites the
// request path or query, since the signature covers them as sent.
//
// On failure it returns the error from Verify (or a wrapped body read
// error) and does not write a response: the API's HTTPErrorHandler maps
// the sentinels to problem+json. It logs nothing.
func (v *Verifier) MiddlewareMaxBody(maxBody int64) echo.MiddlewareFunc {
	if maxBody <= 0 {
		maxBody = v.maxBody
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			body, err := readBody(r, maxBody)
			if err != nil {
				return err
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			creds, err := v.verify(r.Context(), r, body, maxBody)
			if err != nil {
				return fmt.Errorf("authenticate request: %w", err)
			}
			creds.Secret = nil // handlers need the identity, not the key
			c.Set(credentialsKey, creds)
			return next(c)
		}
	}
}

// FromContext returns the Credentials stored by the middleware. Their
// Secret is nil.
func FromContext(c echo.Context) (Credentials, bool) {
	creds, ok := c.Get(credentialsKey).(Credentials)
	return creds, ok
}

// readBody reads r.Body completely, failing with *BodyTooLargeError past
// limit bytes; a declared Content-Length over the limit fails before
// reading.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, &BodyTooLargeError{Limit: limit}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: the probe for a longer body
	}
	probe := limit + 1
	if probe < 0 { // limit == math.MaxInt64
		probe = limit
	}
	n, err := buf.ReadFrom(io.LimitReader(r.Body, probe))
	if err != nil {
		return nil, fmt.Errorf("signing: read request body: %w", err)
	}
	if n > limit {
		return nil, &BodyTooLargeError{Limit: limit}
	}
	return buf.Bytes(), nil
}
