package api

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/pushledger/pushledger/api/signing"

	"github.com/pushledger/pushledger/commands"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/projections"
)

// DeviceRequest is the body of PUT /v1/devices/{id}.
type DeviceRequest struct {
	Platform  string            `json:"platform"`
	Brand     string            `json:"brand,omitempty"`
	Model     string            `json:"model,omitempty"`
	OSVersion string            `json:"os_version,omitempty"`
	Tokens    map[string]string `json:"tokens,omitempty"`
}

func (s *Server) deviceID(c echo.Context) (string, error) {
	id := c.Param("id")
	if !device.ValidID(id) {
		return "", problem(http.StatusUnprocessableEntity, SlugInvalidRequest, "Invalid request", "device id must be 1..128 of [A-Za-z0-9._:-]")
	}
	return id, nil
}

// runDevice runs cmds, in order, on the device in the path and waits until
// the registry shows their effect; it returns the device id.
func (s *Server) runDevice(c echo.Context, cmds ...device.Command) (string, error) {
	id, err := s.deviceID(c)
	if err != nil {
		return "", err
	}
	ctx := c.Request().Context()
	var last commands.Result
	for _, cmd := range cmds {
		_, res, err := s.deps.Commands.Device(ctx, appID(c), id, cmd)
		if err != nil {
			return "", err
		}
		if res.Position > 0 {
			last = res
		}
	}
	return id, s.waitRegistry(ctx, last)
}

// deviceCommand runs cmds and answers with the device's view.
func (s *Server) deviceCommand(c echo.Context, cmds ...device.Command) error {
	id, err := s.runDevice(c, cmds...)
	if err != nil {
		return err
	}
	return s.writeDevice(c, id)
}

func (s *Server) waitRegistry(ctx context.Context, res commands.Result) error {
	if res.Position == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.ProjectionWait)
	defer cancel()
	if err := s.deps.Devices.WaitFor(wctx, res.Position); err != nil {
		return problem(http.StatusServiceUnavailable, SlugUnavailable, "Registry lagging", "the change is recorded but the registry has not caught up yet")
	}
	return nil
}

func (s *Server) writeDevice(c echo.Context, id string) error {
	v, err := s.reg.Device(appID(c), id)
	if errors.Is(err, projections.ErrNotFound) {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such device")
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

func (s *Server) putDevice(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var r DeviceRequest
	if err := decodeStrict(body, &r); err != nil {
		return err
	}
	id, err := s.deviceID(c)
	if err != nil {
		return err
	}
	return s.deviceCommand(c, device.Register{AppID: appID(c), DeviceID: id, Profile: device.Profile{
		Platform: r.Platform, Brand: r.Brand, Model: r.Model, OSVersion: r.OSVersion, Tokens: r.Tokens}})
}

func (s *Server) getDevice(c echo.Context) error {
	id, err := s.deviceID(c)
	if err != nil {
		return err
	}
	return s.writeDevice(c, id)
}

func (s *Server) putAlias(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var r struct {
		Alias string `json:"alias"`
	}
	if err := decodeStrict(body, &r); err != nil {
		return err
	}
	return s.deviceCommand(c, device.BindAlias{Alias: r.Alias})
}

func (s *Server) deleteAlias(c echo.Context) error {
	return s.deviceCommand(c, device.UnbindAlias{})
}

func (s *Server) postTags(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	var r struct {
		Add    []string `json:"add"`
		Remove []string `json:"remove"`
	}
	if err := decodeStrict(body, &r); err != nil {
		return err
	}
	if len(r.Add) == 0 && len(r.Remove) == 0 {
		return problem(http.StatusUnprocessableEntity, SlugInvalidRequest, "Invalid request", "add or remove at least one tag")
	}
	var cmds []device.Command
	if len(r.Remove) > 0 {
		cmds = append(cmds, device.RemoveTags{Tags: r.Remove})
	}
	if len(r.Add) > 0 {
		cmds = append(cmds, device.AddTags{Tags: r.Add})
	}
	return s.deviceCommand(c, cmds...)
}

func (s *Server) postLogout(c echo.Context) error {
	id, err := s.runDevice(c, device.Logout{})
	if err != nil {
		return err
	}
	s.revoke(appID(c), id, false)
	return c.NoContent(http.StatusNoContent)
}

// Gateway issues device credentials for the device gateway.
type Gateway interface {
	// IssueCredential issues the credential of device of the app with
	// appKey, and says where and how to connect: the gateway's address and
	// the server key to pin (nil on plain TCP).
	IssueCredential(appKey, device string) (credential []byte, addr string, serverKey []byte, err error)
	// Revoke closes the device's live connection, if it has one: it
	// logged out (blocked false; DISCONNECT 3505) or the app blacklisted
	// it (blocked true; 3508). Its later connects are refused as well.
	Revoke(appKey, device string, blocked bool)
}

// revoke tells the gateway, if there is one, that device of app lost its
// right to connect.
func (s *Server) revoke(appID, device string, blocked bool) {
	if s.deps.Gateway == nil {
		return
	}
	if a, ok := s.deps.Apps.ByID(appID); ok {
		s.deps.Gateway.Revoke(a.Key, device, blocked)
	}
}

// DeviceCredential answers POST /v1/devices/{id}/credential.
type DeviceCredential struct {
	DeviceID   string `json:"device_id"`
	Credential string `json:"credential"`
	// GatewayAddr is the gateway's host:port.
	GatewayAddr string `json:"gateway_addr"`
	// ServerKey is the gateway's Noise public key (standard base64), which
	// the device pins; absent when the gateway runs plain TCP.
	ServerKey string `json:"server_key,omitempty"`
}

// postCredential issues a registered, active device's gateway credential:
// the app's backend fetches it and hands it to the device, which presents
// it at CONNECT (docs/gateway-protocol.md).
func (s *Server) postCredential(c echo.Context) error {
	id, err := s.deviceID(c)
	if err != nil {
		return err
	}
	if s.deps.Gateway == nil {
		return problem(http.StatusServiceUnavailable, SlugUnavailable, "Gateway off", "this server runs no device gateway")
	}
	v, err := s.reg.Device(appID(c), id)
	if err != nil {
		return err
	}
	if !v.Active {
		return problem(http.StatusConflict, SlugInvalidTransition, "Not allowed in the current state", "the device is logged out; register it again")
	}
	cr, _ := signing.FromContext(c)
	a, ok := s.deps.Apps.ByID(cr.AppID)
	if !ok {
		return problem(http.StatusNotFound, SlugNotFound, "Not found", "no such app")
	}
	cred, addr, key, err := s.deps.Gateway.IssueCredential(a.Key, id)
	if err != nil {
		return err
	}
	out := DeviceCredential{DeviceID: id, Credential: string(cred), GatewayAddr: addr}
	if key != nil {
		out.ServerKey = base64.StdEncoding.EncodeToString(key)
	}
	return c.JSON(http.StatusOK, out)
}
