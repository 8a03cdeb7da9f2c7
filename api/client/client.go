// Package client is a small Go client of pushledger's REST API: it signs
// app requests (docs/auth.md) and decodes problem+json errors. The CLI, the
// tests and the benchmarks use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pushledger/pushledger/api/signing"
)

// Client talks to one pushledger server.
type Client struct {
	// BaseURL, e.g. http://127.0.0.1:8080.
	BaseURL string
	// AppKey and AppSecret sign /v1 requests.
	AppKey    string
	AppSecret string
	// AdminToken authorises /admin/v1 requests.
	AdminToken string
	// HTTP is the HTTP client; default http.DefaultClient.
	HTTP *http.Client
	// Now is the clock for signatures; default time.Now.
	Now func() time.Time
}

// Problem is a problem+json answer.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Errors []struct {
		Pointer string `json:"pointer"`
		Detail  string `json:"detail"`
	} `json:"errors"`
}

func (p *Problem) Error() string {
	s := fmt.Sprintf("%d %s", p.Status, p.Title)
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	for _, e := range p.Errors {
		if e.Pointer != "" {
			s += " (at " + e.Pointer + ")"
		}
	}
	return s
}

// Slug is the last path segment of the problem type.
func (p *Problem) Slug() string { return p.Type[strings.LastIndexByte(p.Type, '/')+1:] }

// Do sends a request and decodes a 2xx JSON answer into out (if not nil).
// Paths under /v1 are signed with the app credentials; under /admin they
// carry the admin token. Errors are *Problem when the server answered one.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case strings.HasPrefix(path, "/v1/"):
		now := time.Now
		if c.Now != nil {
			now = c.Now
		}
		if err := signing.SignRequest(req, c.AppKey, []byte(c.AppSecret), now(), signing.NewNonce(), body); err != nil {
			return err
		}
	case strings.HasPrefix(path, "/admin/"):
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		p := &Problem{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
			_ = json.Unmarshal(b, p)
		}
		return p
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// GatewayAccess is what a device needs to connect to the device gateway.
type GatewayAccess struct {
	// Addr is the gateway's host:port.
	Addr string
	// Credential goes into the device's CONNECT.
	Credential []byte
	// ServerKey is the gateway's Noise public key to pin; nil on plain TCP.
	ServerKey []byte
}

// GatewayAccess fetches device's gateway credential, as an app's backend
// does for its devices (POST /v1/devices/{id}/credential).
func (c *Client) GatewayAccess(ctx context.Context, device string) (GatewayAccess, error) {
	var out struct {
		Credential  string `json:"credential"`
		GatewayAddr string `json:"gateway_addr"`
		ServerKey   []byte `json:"server_key"` // standard base64, decoded by encoding/json
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/devices/"+url.PathEscape(device)+"/credential", nil, nil, &out); err != nil {
		return GatewayAccess{}, err
	}
	return GatewayAccess{Addr: out.GatewayAddr, Credential: []byte(out.Credential), ServerKey: out.ServerKey}, nil
}
