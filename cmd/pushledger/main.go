// Command pushledger is the single binary of the pushledger push platform:
// the server (serve) and the operator's and developer's CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pushledger/pushledger/api/client"
	"github.com/pushledger/pushledger/cmd/pushledger/internal/platform"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pushledger: "+oneLine(err))
		os.Exit(1)
	}
}

func oneLine(err error) string {
	var p *client.Problem
	if errors.As(err, &p) {
		return p.Error()
	}
	s := err.Error()
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " (and more)"
		}
	}
	return s
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "pushledger",
		Short:         "A self-hosted push platform that keeps every message's history",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.String("config", "", "configuration file (YAML); also PUSHLEDGER_CONFIG")
	pf.String("data-dir", "", "data directory (default ./data)")
	pf.String("url", "", "server URL for client commands (default http://127.0.0.1:8080)")
	pf.String("app-key", "", "app key for app commands (or PUSHLEDGER_APP_KEY)")
	pf.String("app-secret", "", "app secret for app commands (or PUSHLEDGER_APP_SECRET)")
	pf.String("admin-token", "", "admin token (default: PUSHLEDGER_ADMIN_TOKEN or <data-dir>/admin.token)")
	root.AddCommand(serveCmd(), appCmd(), deviceCmd(), sendCmd(), statusCmd(), historyCmd(), cancelCmd(), resendCmd(), replayCmd(), webhookCmd())
	return root
}

func logger(c Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func platformConfig(c Config, log *slog.Logger) platform.Config {
	pol, _ := c.Delivery.PolicyJSON() // checked by loadConfig
	return platform.Config{DataDir: c.DataDir, AdminToken: c.AdminToken, SecretKey: c.SecretKey, WebhookTimeout: c.Webhook.Timeout,
		Runners: c.Delivery.Runners, DeliveryPolicy: pol, Logger: log,
		GatewayAddr: gatewayAddr(c.Gateway.Addr), GatewayPlain: c.Gateway.Plain, GatewayProxyProtocol: c.Gateway.ProxyProtocol,
		GatewayHeartbeat: c.Gateway.heartbeat(), GatewayCredentialTTL: c.Gateway.CredentialTTL}
}

// gatewayAddr turns host:port into gnet's form.
func gatewayAddr(a string) string {
	if a == "off" || strings.Contains(a, "://") {
		return a
	}
	return "tcp://" + a
}

// reloadConfig reloads the configuration and applies what can change at
// run time: the default delivery policy.
func reloadConfig(ctx context.Context, flags *pflag.FlagSet, p *platform.Platform) error {
	c, err := loadConfig(flags)
	if err != nil {
		return err
	}
	pol, err := c.Delivery.PolicyJSON()
	if err != nil {
		return err
	}
	if err := p.SetGatewayHeartbeat(c.Gateway.heartbeat()); err != nil {
		return err
	}
	return p.SetDeliveryPolicy(ctx, pol, "configuration (reload)")
}

// onSignal calls reload for every signal on sig until ctx ends, and
// report with its outcome.
func onSignal(ctx context.Context, sig <-chan os.Signal, reload func() error, report func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			report(reload())
		}
	}
}

func serveCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the platform (embedded profile: everything in one process, data in --data-dir)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			log := logger(c, cmd.ErrOrStderr())
			setProcs(log)
			pc := platformConfig(c, log)
			roles, _ := cmd.Flags().GetStringSlice("roles")
			pc.NoDispatcher = !slices.Contains(roles, "dispatcher")
			for _, r := range roles {
				if r != "api" && r != "dispatcher" {
					return fmt.Errorf("--roles: unknown role %q (api, dispatcher)", r)
				}
			}
			p, err := platform.Open(pc)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", c.HTTP.Addr)
			if err != nil {
				return errors.Join(err, p.Close())
			}
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go onSignal(cmd.Context(), hup, func() error { return reloadConfig(cmd.Context(), cmd.Flags(), p) }, func(err error) {
				if err != nil {
					log.Error("configuration reload refused; the running configuration stays", "err", err)
					return
				}
				log.Info("configuration reloaded")
			})
			runErr := p.Run(cmd.Context(), ln)
			return errors.Join(runErr, p.Close())
		},
	}
	cmd.Flags().String("http-addr", "", "HTTP listen address (default 127.0.0.1:8080)")
	cmd.Flags().String("log-level", "", "debug, info, warn or error")
	cmd.Flags().String("gateway-addr", "", "device gateway listen address, or off (default 127.0.0.1:7100)")
	cmd.Flags().StringSlice("roles", []string{"api", "dispatcher"}, "roles of this process: api (REST and read models), dispatcher")
	return cmd
}

// setProcs runs the server with twice the runtime's default GOMAXPROCS
// (the cores, or the container's CPU quota), unless the GOMAXPROCS
// environment variable sets it. A goroutine in a system call keeps its P
// until the runtime's monitor hands it off, which can take milliseconds:
// the gateway's event loops wait in epoll_wait and the ledger's WAL writer
// in fdatasync, outside the network poller, so with one P per core the
// other goroutines often had one core fewer than the machine. Measured on
// 2 cores (docs/operations.md): unicast through the gateway at 2,000/s,
// ledger on disk, p99 29-33 ms with 2 Ps, 14-15 ms with 4.
func setProcs(log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" {
		return
	}
	n := 2 * runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n)
	log.Debug("GOMAXPROCS set", "procs", n)
}

func replayCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "replay",
		Short: "Rebuild every read model from the ledger (stop the server first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig(cmd.Flags())
			if err != nil {
				return err
			}
			// Open would make a new, empty platform in a mistyped directory.
			if _, err := os.Stat(filepath.Join(c.DataDir, "ledger")); err != nil {
				return fmt.Errorf("no ledger in data directory %q: nothing to replay (check --data-dir)", c.DataDir)
			}
			p, err := platform.Open(platformConfig(c, logger(c, io.Discard)))
			if err != nil {
				return fmt.Errorf("%w (is the server still running on this data directory?)", err)
			}
			out := cmd.ErrOrStderr()
			err = p.Replay(cmd.Context(), func(name string, pos, last uint64) {
				fmt.Fprintf(out, "\r%-16s %12d / %d events (%3.0f%%)", name, pos, last, 100*float64(pos)/float64(max(last, 1)))
				if pos >= last {
					fmt.Fprintln(out)
				}
			})
			if err == nil {
				fmt.Fprintln(cmd.OutOrStdout(), "read models rebuilt")
			}
			return errors.Join(err, p.Close())
		},
	}
}
