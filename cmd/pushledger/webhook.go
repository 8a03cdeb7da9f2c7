package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/pushledger/pushledger/adapters/channels/webhook"
)

// webhookCmd is a receiver for trying the webhook channel out: it prints
// every push it gets and answers 200 (or the status given).
func webhookCmd() *cobra.Command {
	root := &cobra.Command{Use: "webhook", Short: "Webhook channel tools"}
	listen := &cobra.Command{
		Use:   "listen",
		Short: "Receive webhook pushes and print them (a receiver for trying pushledger out)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			addr, _ := f.GetString("addr")
			secret, _ := f.GetString("secret")
			status, _ := f.GetInt("status")
			out := cmd.OutOrStdout()
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				verified := "unverified (no --secret)"
				if secret != "" {
					if webhook.VerifySignature([]byte(secret), r.Header.Get(webhook.HeaderTimestamp), body, r.Header.Get(webhook.HeaderSignature)) {
						verified = "signature ok"
					} else {
						verified = "BAD SIGNATURE"
						w.WriteHeader(http.StatusUnauthorized)
						fmt.Fprintf(out, "%s rejected a push with a bad signature\n", time.Now().Format(time.RFC3339))
						return
					}
				}
				var p webhook.Payload
				_ = json.Unmarshal(body, &p)
				fmt.Fprintf(out, "%s message %s attempt %d to %d target(s), %s: %q %q\n",
					time.Now().Format(time.RFC3339), p.MessageID, p.Attempt, len(p.Targets), verified, p.Title, p.Body)
				w.WriteHeader(status)
			})
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "listening on http://%s/ (answering %d)\n", ln.Addr(), status)
			srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-cmd.Context().Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(ctx)
			}()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	listen.Flags().String("addr", "127.0.0.1:9000", "listen address")
	listen.Flags().String("secret", "", "app secret, to verify signatures")
	listen.Flags().Int("status", http.StatusOK, "HTTP status to answer (e.g. 503 to see failures)")
	root.AddCommand(listen)
	return root
}
