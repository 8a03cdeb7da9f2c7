package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/pushledger/pushledger/api"
)

// messageActionCmd is "cancel" or "resend": POST /v1/messages/ID/<action>.
func messageActionCmd(action, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use: action + " MESSAGE_ID", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := apiClient(cmd, false)
			if err != nil {
				return err
			}
			reason, _ := cmd.Flags().GetString("reason")
			var out any
			if err := cl.Do(cmd.Context(), http.MethodPost, "/v1/messages/"+url.PathEscape(args[0])+"/"+action, nil, api.ReasonRequest{Reason: reason}, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		},
	}
	cmd.Flags().String("reason", "", "why (recorded in the message's history)")
	return cmd
}

func cancelCmd() *cobra.Command {
	return messageActionCmd("cancel", "Cancel a message that was not sent yet (a scheduled message before its time)")
}

func resendCmd() *cobra.Command {
	return messageActionCmd("resend", "Start a new attempt cycle of a sent or failed message (same message id)")
}

// policyCmd is "app policy get|set|reset APP_ID".
func policyCmd() *cobra.Command {
	root := &cobra.Command{Use: "policy", Short: "Show or change an app's delivery policy (retries, ack windows, failover)"}
	run := func(method string, body func(args []string) (any, error)) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			cl, err := apiClient(cmd, true)
			if err != nil {
				return err
			}
			var b any
			if body != nil {
				if b, err = body(args); err != nil {
					return err
				}
			}
			var out any
			if err := cl.Do(cmd.Context(), method, "/admin/v1/apps/"+url.PathEscape(args[0])+"/policy", nil, b, &out); err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), out)
		}
	}
	get := &cobra.Command{Use: "get APP_ID", Short: "Show the policy in force and the app's own part", Args: cobra.ExactArgs(1),
		RunE: run(http.MethodGet, nil)}
	set := &cobra.Command{Use: "set APP_ID FILE", Short: "Set the app's policy from a JSON file (- for standard input), read onto the defaults",
		Args: cobra.ExactArgs(2),
		RunE: run(http.MethodPut, func(args []string) (any, error) {
			var b []byte
			var err error
			if args[1] == "-" {
				b, err = io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
			} else {
				b, err = os.ReadFile(args[1])
			}
			if err != nil {
				return nil, err
			}
			if !json.Valid(b) {
				return nil, fmt.Errorf("%s is not valid JSON", args[1])
			}
			return json.RawMessage(b), nil
		})}
	reset := &cobra.Command{Use: "reset APP_ID", Short: "Go back to the platform's default policy", Args: cobra.ExactArgs(1),
		RunE: run(http.MethodDelete, nil)}
	root.AddCommand(get, set, reset)
	return root
}
