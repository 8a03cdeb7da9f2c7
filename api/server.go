// Package api is pushledger's REST API on Echo v4: signed app endpoints for
// messages and devices, bearer-token admin endpoints for apps, the OpenAPI
// document, health and metrics. Every error leaves through one handler as
// RFC 9457 problem+json.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/adapters/secretbox"
	"github.com/pushledger/pushledger/api/signing"
	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/policy"
	"github.com/pushledger/pushledger/projections"
	"github.com/pushledger/pushledger/schema"
)

// Config of the API.
type Config struct {
	// AdminToken guards /admin/v1 (Authorization: Bearer). Required.
	AdminToken string
	// MaxBatch is the largest batch of POST /v1/messages. Default 1000.
	MaxBatch int
	// MaxPayload bounds a message's title + body + data, in bytes. Default 4096.
	MaxPayload int
	// IdempotencyWindow: a repeated idempotency key within it returns the
	// original message. Default 24 h.
	IdempotencyWindow time.Duration
	// SignatureWindow: accepted clock difference of signed requests. Default 300 s.
	SignatureWindow time.Duration
	// ProjectionWait bounds how long a device write waits for the registry to
	// show it. Default 5 s.
	ProjectionWait time.Duration
	// Policy returns the platform's default delivery policy, onto which
	// apps' own policies are read. Default policy.DefaultConfig.
	Policy func() policy.Config
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger, default slog.Default().
	Logger *slog.Logger
	// Registerer for metrics; default a new registry.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics; default the Registerer if it is a registry.
	Gatherer prometheus.Gatherer
}

// Deps are the parts the API works with.
type Deps struct {
	Commands *commands.Handler
	Ledger   ledger.Store
	Apps     *projections.Apps
	Store    projections.Store
	Devices  *projections.Runner // the device registry's runner
	Box      *secretbox.Box
	Nonces   signing.NonceStore
	// Gateway issues device credentials; nil when the gateway is off.
	Gateway Gateway
}

// Server is the REST API.
type Server struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	e    *echo.Echo
	reg  projections.Registry
	// policies gives apps their delivery policy in force.
	policies *policy.Resolver
}

// New builds the API.
func New(cfg Config, deps Deps) (*Server, error) {
	var errs []error
	if cfg.AdminToken == "" {
		errs = append(errs, errors.New("api: AdminToken is required"))
	}
	if deps.Commands == nil || deps.Ledger == nil || deps.Apps == nil || deps.Store == nil || deps.Devices == nil || deps.Box == nil || deps.Nonces == nil {
		errs = append(errs, errors.New("api: every dependency is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.MaxPayload <= 0 {
		cfg.MaxPayload = 4096
	}
	if cfg.IdempotencyWindow <= 0 {
		cfg.IdempotencyWindow = 24 * time.Hour
	}
	if cfg.SignatureWindow <= 0 {
		cfg.SignatureWindow = 300 * time.Second
	}
	if cfg.ProjectionWait <= 0 {
		cfg.ProjectionWait = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Policy == nil {
		cfg.Policy = policy.DefaultConfig
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		r := prometheus.NewRegistry()
		cfg.Registerer, cfg.Gatherer = r, r
	}
	if cfg.Gatherer == nil {
		if g, ok := cfg.Registerer.(prometheus.Gatherer); ok {
			cfg.Gatherer = g
		} else {
			cfg.Gatherer = prometheus.DefaultGatherer
		}
	}
	s := &Server{cfg: cfg, deps: deps, log: cfg.Logger, reg: projections.Registry{Store: deps.Store},
		policies: policy.NewResolver(cfg.Policy, func(id string, err error) {
			cfg.Logger.Error("app policy invalid; using the defaults", "app", id, "err", err)
		})}
	verifier, err := signing.NewVerifier(signing.Config{
		Apps: appCredentials{s}, Nonces: deps.Nonces, Window: cfg.SignatureWindow,
		MaxBody: 64 << 10, Now: cfg.Now, // devices and queries; submissions get more below
	})
	if err != nil {
		return nil, err
	}
	m := newMetrics(cfg.Registerer)

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(middleware.Recover())
	e.Use(m.middleware)

	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/openapi.yaml", func(c echo.Context) error {
		return c.Blob(http.StatusOK, "application/yaml", schema.OpenAPI)
	})
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))

	// Every /v1 route is signed; only submissions may carry a full batch.
	auth := verifier.Middleware()
	batchAuth := verifier.MiddlewareMaxBody(int64(cfg.MaxBatch)*int64(cfg.MaxPayload+1024) + 64<<10)
	v1 := e.Group("/v1", s.durableBeforeAck)
	v1.POST("/messages", s.postMessages, batchAuth)
	v1.GET("/messages", s.listMessages, auth)
	v1.GET("/messages/:id", s.getMessage, auth)
	v1.GET("/messages/:id/events", s.getMessageEvents, auth)
	v1.GET("/messages/:id/devices/:device", s.getMessageDevice, auth)
	v1.POST("/messages/:id/cancel", s.postCancel, auth)
	v1.POST("/messages/:id/resend", s.postResend, auth)
	v1.PUT("/devices/:id", s.putDevice, auth)
	v1.GET("/devices/:id", s.getDevice, auth)
	v1.PUT("/devices/:id/alias", s.putAlias, auth)
	v1.DELETE("/devices/:id/alias", s.deleteAlias, auth)
	v1.POST("/devices/:id/tags", s.postTags, auth)
	v1.POST("/devices/:id/logout", s.postLogout, auth)
	v1.POST("/devices/:id/credential", s.postCredential, auth)

	admin := e.Group("/admin/v1", s.adminAuth)
	admin.POST("/apps", s.createApp)
	admin.GET("/apps", s.listApps)
	admin.GET("/apps/:id", s.getApp)
	admin.PUT("/apps/:id/channels/:channel", s.putChannel)
	admin.DELETE("/apps/:id/channels/:channel", s.deleteChannel)
	admin.POST("/apps/:id/blacklist", s.postBlacklist)
	admin.GET("/apps/:id/policy", s.getPolicy)
	admin.PUT("/apps/:id/policy", s.putPolicy)
	admin.DELETE("/apps/:id/policy", s.deletePolicy)

	s.e = e
	return s, nil
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.e }

// durableBeforeAck attaches a signing.Barrier to the request, so that the
// nonce store's sync overlaps the handler's work, and holds the response
// header until the barrier has passed. Should the sync fail, the answer
// becomes 503: the request is not acknowledged (its effects, if any, stay
// and a retry with an idempotency key finds them).
func (s *Server) durableBeforeAck(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ctx, bar := signing.WithBarrier(c.Request().Context())
		c.SetRequest(c.Request().WithContext(ctx))
		resp := c.Response()
		resp.Before(func() {
			if err := bar.Wait(); err != nil {
				s.log.Error("request not durable", "path", c.Request().URL.Path, "err", err)
				resp.Status = http.StatusServiceUnavailable
			}
		})
		err := next(c)
		if werr := bar.Wait(); werr != nil && err == nil && !resp.Committed {
			return problem(http.StatusServiceUnavailable, SlugUnavailable, "Not durable", "the request could not be made durable; retry")
		}
		return err
	}
}

func (s *Server) adminAuth(next echo.HandlerFunc) echo.HandlerFunc {
	want := []byte("Bearer " + s.cfg.AdminToken)
	return func(c echo.Context) error {
		got := []byte(c.Request().Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			detail := "admin endpoints need Authorization: Bearer <admin token>"
			if len(got) > 0 {
				detail = "the Authorization header does not carry the admin token"
			}
			return problem(http.StatusUnauthorized, SlugUnauthorized, "Unauthorized", detail)
		}
		// Admin bodies are small (an app, a channel, a policy): 64 KiB.
		c.Request().Body = http.MaxBytesReader(c.Response(), c.Request().Body, 64<<10)
		return next(c)
	}
}

// appCredentials serves the signing verifier from the app directory and
// the secret box (which opens each sealed secret once).
type appCredentials struct{ s *Server }

func (a appCredentials) Lookup(_ context.Context, appKey string) (signing.Credentials, error) {
	ap, ok := a.s.deps.Apps.ByKey(appKey)
	if !ok {
		return signing.Credentials{}, signing.ErrUnknownApp
	}
	secret, err := a.s.deps.Box.Open(ap.SecretCiphertext, []byte(ap.ID))
	if err != nil {
		return signing.Credentials{}, err
	}
	return signing.Credentials{AppID: ap.ID, Secret: secret}, nil
}

func appID(c echo.Context) string {
	cr, _ := signing.FromContext(c)
	return cr.AppID
}
