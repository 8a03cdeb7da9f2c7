package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/pushledger/pushledger/api"
	"github.com/pushledger/pushledger/api/client"
	gwclient "github.com/pushledger/pushledger/gateway/client"
)

// deviceRunCmd is "device run": N simulated devices on the Go SDK, each
// registered (unless --no-register), given its gateway credential by the
// API (as an app's backend would) and connected to the gateway, printing
// every push they get. It is also the load generator of the gateway
// benchmarks.
func deviceRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run simulated devices on the device SDK: connect to the gateway, print and acknowledge every push",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			n, _ := f.GetInt("count")
			prefix, _ := f.GetString("prefix")
			storeDir, _ := f.GetString("store-dir")
			quiet, _ := f.GetBool("quiet")
			noRegister, _ := f.GetBool("no-register")
			openRate, _ := f.GetFloat64("open-rate")
			if n < 1 {
				return fmt.Errorf("--count must be at least 1")
			}
			if openRate < 0 || openRate > 1 {
				return fmt.Errorf("--open-rate must be between 0 and 1")
			}
			if storeDir == "" {
				if storeDir, err = os.MkdirTemp("", "pushledger-devices-"); err != nil {
					return err
				}
				defer os.RemoveAll(storeDir)
			}
			out := cmd.OutOrStdout()
			var mu sync.Mutex // serialises output lines
			var received, connected atomic.Int64
			ctx := cmd.Context()
			var wg sync.WaitGroup
			for i := range n {
				id := fmt.Sprintf("%s%d", prefix, i+1)
				var sdk *gwclient.Client
				sdk, err = simulatedDevice(ctx, cl, id, filepath.Join(storeDir, id), !noRegister, func(p gwclient.Push) {
					received.Add(1)
					opened := openRate > 0 && rand.Float64() < openRate
					if opened {
						// The user taps it: reported after the ACK, off the
						// SDK's reading goroutine.
						go func() { _ = sdk.Opened(p.ID) }()
					}
					if quiet {
						return
					}
					var pl struct {
						Notification *struct{ Title, Body string } `json:"notification"`
						Data         json.RawMessage               `json:"data"`
					}
					_ = json.Unmarshal(p.Payload, &pl)
					mu.Lock()
					defer mu.Unlock()
					line := fmt.Sprintf("%s  %s", id, p.ID)
					if pl.Notification != nil {
						line += fmt.Sprintf("  %q %q", pl.Notification.Title, pl.Notification.Body)
					}
					if len(pl.Data) > 0 {
						line += "  data=" + string(pl.Data)
					}
					if opened {
						line += "  (opened)"
					}
					fmt.Fprintln(out, line)
				}, func() {
					if c := connected.Add(1); c == int64(n) && !quiet {
						mu.Lock()
						fmt.Fprintf(cmd.ErrOrStderr(), "%d devices connected\n", n)
						mu.Unlock()
					}
				})
				if err != nil {
					return fmt.Errorf("device %s: %w", id, err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer sdk.Close()
					if err := sdk.Run(ctx); err != nil && ctx.Err() == nil {
						mu.Lock()
						fmt.Fprintf(cmd.ErrOrStderr(), "device %s stopped: %v\n", id, err)
						mu.Unlock()
					}
				}()
			}
			if quiet {
				go func() {
					t := time.NewTicker(time.Second)
					defer t.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-t.C:
							fmt.Fprintf(cmd.ErrOrStderr(), "%d devices connected, %d pushes received\n", connected.Load(), received.Load())
						}
					}
				}()
			}
			wg.Wait()
			return nil
		},
	}
	f := cmd.Flags()
	f.Int("count", 1, "number of devices")
	f.String("prefix", "sim-", "prefix of the device ids: sim-1, sim-2, ...")
	f.String("store-dir", "", "the devices' SDK stores (dedup), one directory each (default: a temporary directory)")
	f.Bool("quiet", false, "print a summary every second instead of every push")
	f.Bool("no-register", false, "do not register the devices first (they must exist)")
	f.Float64("open-rate", 0, "fraction of the pushes each device reports as opened by its user (0 to 1)")
	return cmd
}

// simulatedDevice registers device id (when register is set), fetches its
// gateway credential and returns its SDK client, not yet running.
func simulatedDevice(ctx context.Context, cl *client.Client, id, store string, register bool, onPush func(gwclient.Push), onConnected func()) (*gwclient.Client, error) {
	if register {
		if err := cl.Do(ctx, http.MethodPut, "/v1/devices/"+url.PathEscape(id), nil, api.DeviceRequest{Platform: "android", Brand: "pushledger", Model: "simulator"}, nil); err != nil {
			return nil, err
		}
	}
	acc, err := cl.GatewayAccess(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(store, 0o700); err != nil {
		return nil, err
	}
	return gwclient.New(gwclient.Config{Addr: acc.Addr, AppKey: cl.AppKey, DeviceID: id, Credential: acc.Credential,
		ServerKey: acc.ServerKey, StoreDir: store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnConnected: func(gwclient.Connected) { onConnected() }},
		gwclient.HandlerFunc(func(_ context.Context, p gwclient.Push) error { onPush(p); return nil }))
}
