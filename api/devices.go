package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

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
	if _, err := s.runDevice(c, device.Logout{}); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}
