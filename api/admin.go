package api

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"net/http"
	"sort"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/app"
)

// CreateAppRequest is the body of POST /admin/v1/apps.
type CreateAppRequest struct {
	Name string `json:"name"`
	// WebhookURL, when set, configures the webhook channel at priority 100.
	WebhookURL string `json:"webhook_url,omitempty"`
	// Gateway, when set, enables delivery through the device gateway, at
	// priority 0 (tried first).
	Gateway bool `json:"gateway,omitempty"`
}

// CreatedApp answers POST /admin/v1/apps: the only time the secret is shown.
type CreatedApp struct {
	AppID     string `json:"app_id"`
	Name      string `json:"name"`
	AppKey    string `json:"app_key"`
	AppSecret string `json:"app_secret"`
}

// AppView is an app without its secret.
type AppView struct {
	AppID     string                       `json:"app_id"`
	Name      string                       `json:"name"`
	AppKey    string                       `json:"app_key"`
	Channels  map[string]app.ChannelConfig `json:"channels"`
	Blacklist map[string][]string          `json:"blacklist"`
}

func viewApp(a *app.App) AppView {
	v := AppView{AppID: a.ID, Name: a.Name, AppKey: a.Key, Channels: a.Channels, Blacklist: map[string][]string{}}
	if v.Channels == nil {
		v.Channels = map[string]app.ChannelConfig{}
	}
	for kind, set := range a.Blacklist {
		for val := range set {
			v.Blacklist[kind] = append(v.Blacklist[kind], val)
		}
		sort.Strings(v.Blacklist[kind])
	}
	return v
}

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return lowerBase32.EncodeToString(b)
}

func (s *Server) createApp(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var r CreateAppRequest
	if err := decodeStrict(body, &r); err != nil {
		return err
	}
	ctx := c.Request().Context()
	id := randomToken(10) // 16 chars of [a-z2-7]: no '-' (stream names split on it)
	key := "pk_" + randomToken(15)
	secretRaw := make([]byte, 32)
	_, _ = rand.Read(secretRaw)
	secret := "sk_" + base64.RawURLEncoding.EncodeToString(secretRaw)
	a, res, err := s.deps.Commands.App(ctx, id, app.Create{AppID: id, Name: r.Name, AppKey: key, SecretCiphertext: s.deps.Box.Seal([]byte(secret), []byte(id))})
	if err != nil {
		return err
	}
	if r.Gateway {
		if _, res, err = s.deps.Commands.App(ctx, id, app.ConfigureChannel{Channel: "gateway", Config: app.ChannelConfig{Enabled: true}}); err != nil {
			return err
		}
	}
	if r.WebhookURL != "" {
		cfg := app.ChannelConfig{Enabled: true, Priority: 100, Settings: map[string]string{"url": r.WebhookURL}}
		if _, res, err = s.deps.Commands.App(ctx, id, app.ConfigureChannel{Channel: "webhook", Config: cfg}); err != nil {
			return err
		}
	}
	if err := s.deps.Apps.WaitFor(ctx, res.Position); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, CreatedApp{AppID: a.ID, Name: a.Name, AppKey: key, AppSecret: secret})
}

func (s *Server) listApps(c echo.Context) error {
	apps := s.deps.Apps.List()
	out := make([]AppView, 0, len(apps))
	for _, a := range apps {
		out = append(out, viewApp(a))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Name < out[j].Name || out[i].Name == out[j].Name && out[i].AppID < out[j].AppID
	})
	return c.JSON(http.StatusOK, map[string]any{"apps": out})
}

func (s *Server) getApp(c echo.Context) error {
	a, ok := s.deps.Apps.ByID(c.Param("id"))
	if !ok {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such app")
	}
	return c.JSON(http.StatusOK, viewApp(a))
}

// appCommand runs cmds, in order, on the app in the path, waits until the
// app directory shows them, and answers with the app's view.
func (s *Server) appCommand(c echo.Context, cmds ...app.Command) error {
	ctx := c.Request().Context()
	id := c.Param("id")
	cur, ok := s.deps.Apps.ByID(id)
	if !ok {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such app")
	}
	a := *cur
	for _, cmd := range cmds {
		var res commands.Result
		var err error
		if a, res, err = s.deps.Commands.App(ctx, id, cmd); err != nil {
			return err
		}
		if res.Position > 0 {
			if err := s.deps.Apps.WaitFor(ctx, res.Position); err != nil {
				return err
			}
		}
	}
	return c.JSON(http.StatusOK, viewApp(&a))
}

func (s *Server) putChannel(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var cfg app.ChannelConfig
	if err := decodeStrict(body, &cfg); err != nil {
		return err
	}
	return s.appCommand(c, app.ConfigureChannel{Channel: strings.ToLower(c.Param("channel")), Config: cfg})
}

func (s *Server) deleteChannel(c echo.Context) error {
	return s.appCommand(c, app.RemoveChannel{Channel: strings.ToLower(c.Param("channel"))})
}

func (s *Server) postBlacklist(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var r struct {
		Kind   string   `json:"kind"`
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
	}
	if err := decodeStrict(body, &r); err != nil {
		return err
	}
	var cmds []app.Command
	if len(r.Add) > 0 {
		cmds = append(cmds, app.AddToBlacklist{Kind: r.Kind, Values: r.Add})
	}
	if len(r.Remove) > 0 {
		cmds = append(cmds, app.RemoveFromBlacklist{Kind: r.Kind, Values: r.Remove})
	}
	if err := s.appCommand(c, cmds...); err != nil {
		return err
	}
	// The devices blacklisted lose their live connection now: by id, or
	// every device of the user (alias) or group (tag).
	appID := c.Param("id")
	revoke := func(d string) bool { s.revoke(appID, d, true); return true }
	for _, v := range r.Add {
		var err error
		switch r.Kind {
		case app.KindDevice:
			revoke(v)
		case app.KindUser:
			err = s.reg.ByAlias(appID, v, revoke)
		case app.KindGroup:
			err = s.reg.ByTag(appID, v, revoke)
		}
		if err != nil {
			// Recorded and answered: such devices are refused at their
			// next connect all the same.
			s.log.Error("blacklist: disconnecting devices", "app", appID, "kind", r.Kind, "value", v, "err", err)
		}
	}
	return nil
}
