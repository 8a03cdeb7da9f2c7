package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/domain/message"
)

// apiClient builds a client from the configuration. Admin commands read the
// token from the configuration or from the data directory's admin.token.
func apiClient(cmd *cobra.Command, admin bool) (*client.Client, error) {
	c, err := loadConfig(cmd.Flags())
	if err != nil {
		return nil, err
	}
	cl := &client.Client{BaseURL: c.URL, AppKey: c.AppKey, AppSecret: c.AppSecret, AdminToken: c.AdminToken,
		HTTP: &http.Client{Timeout: 60 * time.Second}}
	if admin && cl.AdminToken == "" {
		b, err := os.ReadFile(filepath.Join(c.DataDir, "admin.token"))
		if err != nil {
			return nil, fmt.Errorf("no admin token: set PUSHLEDGER_ADMIN_TOKEN or --admin-token (or run where %s exists)", filepath.Join(c.DataDir, "admin.token"))
		}
		cl.AdminToken = strings.TrimSpace(string(b))
	}
	if !admin && (cl.AppKey == "" || cl.AppSecret == "") {
		return nil, errors.New("no app credentials: set PUSHLEDGER_APP_KEY and PUSHLEDGER_APP_SECRET (or --app-key, --app-secret)")
	}
	return cl, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func appCmd() *cobra.Command {
	root := &cobra.Command{Use: "app", Short: "Manage apps (admin)"}
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an app and print its key and secret (shown once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := apiClient(cmd, true)
			if err != nil {
				return err
			}
			name, _ := cmd.Flags().GetString("name")
			hook, _ := cmd.Flags().GetString("webhook-url")
			gw, _ := cmd.Flags().GetBool("gateway")
			var out api.CreatedApp
			if err := cl.Do(cmd.Context(), http.MethodPost, "/admin/v1/apps", nil, api.CreateAppRequest{Name: name, WebhookURL: hook, Gateway: gw}, &out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "app_id:     %s\napp_key:    %s\napp_secret: %s\n", out.AppID, out.AppKey, out.AppSecret)
			fmt.Fprintf(w, "\nexport PUSHLEDGER_APP_KEY=%s PUSHLEDGER_APP_SECRET=%s\n", out.AppKey, out.AppSecret)
			return nil
		},
	}
	create.Flags().String("name", "", "app name (required)")
	create.Flags().String("webhook-url", "", "deliver this app's pushes to a webhook at this URL")
	create.Flags().Bool("gateway", false, "deliver this app's pushes through the device gateway first (pushledger device run)")
	_ = create.MarkFlagRequired("name")
	list := &cobra.Command{
		Use: "list", Short: "List apps", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := apiClient(cmd, true)
			if err != nil {
				return err
			}
			var out any
			if err := cl.Do(cmd.Context(), http.MethodGet, "/admin/v1/apps", nil, nil, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	root.AddCommand(create, list, policyCmd())
	return root
}

func deviceCmd() *cobra.Command {
	root := &cobra.Command{Use: "device", Short: "Manage an app's devices"}
	reg := &cobra.Command{
		Use:   "register",
		Short: "Register (or update) a device, optionally binding an alias and tags",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			id, _ := f.GetString("id")
			platform, _ := f.GetString("platform")
			brand, _ := f.GetString("brand")
			model, _ := f.GetString("model")
			osv, _ := f.GetString("os-version")
			tokens, _ := f.GetStringToString("token")
			alias, _ := f.GetString("alias")
			tags, _ := f.GetStringSlice("tag")
			path := "/v1/devices/" + url.PathEscape(id)
			var out any
			req := api.DeviceRequest{Platform: platform, Brand: brand, Model: model, OSVersion: osv, Tokens: tokens}
			if err := cl.Do(cmd.Context(), http.MethodPut, path, nil, req, &out); err != nil {
				return err
			}
			if alias != "" {
				if err := cl.Do(cmd.Context(), http.MethodPut, path+"/alias", nil, map[string]string{"alias": alias}, &out); err != nil {
					return err
				}
			}
			if len(tags) > 0 {
				if err := cl.Do(cmd.Context(), http.MethodPost, path+"/tags", nil, map[string][]string{"add": tags}, &out); err != nil {
					return err
				}
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	f := reg.Flags()
	f.String("id", "", "device id (required)")
	f.String("platform", "android", "android, ios, harmony or web")
	f.String("brand", "", "device brand")
	f.String("model", "", "device model")
	f.String("os-version", "", "OS version")
	f.StringToString("token", nil, "vendor push tokens, channel=token (repeatable)")
	f.String("alias", "", "bind this user alias")
	f.StringSlice("tag", nil, "add tags (repeatable)")
	_ = reg.MarkFlagRequired("id")
	logout := &cobra.Command{
		Use:   "logout DEVICE_ID",
		Short: "Log a device out: it gets no more pushes, and its gateway connection is closed (3505)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			if err := cl.Do(cmd.Context(), http.MethodPost, "/v1/devices/"+url.PathEscape(args[0])+"/logout", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "logged out:", args[0])
			return nil
		},
	}
	root.AddCommand(reg, logout, deviceRunCmd())
	return root
}

func sendCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "send",
		Short: "Submit a push and print its message id",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			var r api.MessageRequest
			r.Audience.DeviceIDs, _ = f.GetStringSlice("device")
			r.Audience.Aliases, _ = f.GetStringSlice("alias")
			if tags, _ := f.GetStringSlice("tag"); len(tags) > 0 {
				r.Audience.Tags = &message.TagExpr{AllOf: tags}
			}
			r.Audience.Broadcast, _ = f.GetBool("broadcast")
			title, _ := f.GetString("title")
			body, _ := f.GetString("body")
			if title != "" || body != "" {
				r.Notification = &message.Notification{Title: title, Body: body}
			}
			if d, _ := f.GetString("data"); d != "" {
				if !json.Valid([]byte(d)) {
					return errors.New("--data is not valid JSON")
				}
				r.Data = json.RawMessage(d)
			}
			ttl, _ := f.GetDuration("ttl")
			r.TTL = int64(ttl / time.Second)
			r.IdempotencyKey, _ = f.GetString("idempotency-key")
			if at, _ := f.GetString("send-at"); at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return fmt.Errorf("--send-at: %w", err)
				}
				r.SendAt = &t
			}
			var out api.AcceptedResponse
			if err := cl.Do(cmd.Context(), http.MethodPost, "/v1/messages", nil, r, &out); err != nil {
				return err
			}
			for _, id := range out.MessageIDs {
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSlice("device", nil, "device ids")
	f.StringSlice("alias", nil, "user aliases")
	f.StringSlice("tag", nil, "tags the devices must all have")
	f.Bool("broadcast", false, "every device of the app")
	f.String("title", "", "notification title")
	f.String("body", "", "notification body")
	f.String("data", "", "data payload (JSON)")
	f.Duration("ttl", 0, "time to live (default 24h)")
	f.String("send-at", "", "send at this RFC 3339 time")
	f.String("idempotency-key", "", "idempotency key")
	return cmd
}

func statusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use: "status MESSAGE_ID", Short: "Show a message's status, or with --device what happened to it on one device", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			path := "/v1/messages/" + url.PathEscape(args[0])
			if d, _ := cmd.Flags().GetString("device"); d != "" {
				path += "/devices/" + url.PathEscape(d)
			}
			var out any
			if err := cl.Do(cmd.Context(), http.MethodGet, path, nil, nil, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().String("device", "", "a device id: whether the message targeted it, and when it was delivered and opened there")
	return cmd
}

func historyCmd() *cobra.Command {
	return &cobra.Command{
		Use: "history MESSAGE_ID", Short: "Show every event of a message, in order", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			var out struct {
				Events []api.MessageEvent `json:"events"`
			}
			if err := cl.Do(cmd.Context(), http.MethodGet, "/v1/messages/"+url.PathEscape(args[0])+"/events", nil, nil, &out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, e := range out.Events {
				fmt.Fprintf(w, "%3d  %s  %-22s %s\n", e.Revision, e.Recorded.Format(time.RFC3339Nano), e.Type, e.Data)
			}
			return nil
		},
	}
}
