package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/pushledger/pushledger/gateway"
	"github.com/pushledger/pushledger/gateway/client"
	"github.com/pushledger/pushledger/gateway/wire"
)

// ackHandler passes acknowledged ids to a channel.
type ackHandler struct {
	gateway.NopHandler
	acked chan wire.MessageID
}

func (h ackHandler) OnAck(_ gateway.Conn, ids []wire.MessageID) {
	for _, id := range ids {
		h.acked <- id
	}
}

// A gateway, a device connected with the Go SDK, and one message pushed
// and acknowledged.
func Example() {
	creds, err := gateway.NewCredentials([]gateway.CredentialKey{{ID: "k1", Secret: []byte("use 32 random bytes, not this...")}})
	if err != nil {
		panic(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	h := ackHandler{acked: make(chan wire.MessageID, 1)}
	srv, err := gateway.New(gateway.Config{Addr: "tcp://127.0.0.1:0", Logger: quiet}, creds, h)
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Run(ctx) }()
	<-srv.Ready()

	dir, err := os.MkdirTemp("", "device")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	connected := make(chan client.Connected, 1)
	dev, err := client.New(client.Config{
		Addr:        srv.Addr().String(),
		AppKey:      "pk_demo",
		DeviceID:    "phone-1",
		Credential:  creds.Issue("pk_demo", "phone-1"), // from the app's backend
		StoreDir:    dir,
		OnConnected: func(c client.Connected) { connected <- c },
		Logger:      quiet,
	}, client.HandlerFunc(func(_ context.Context, p client.Push) error {
		fmt.Printf("device got %s: %s\n", p.ID, p.Payload)
		return nil // acknowledge
	}))
	if err != nil {
		panic(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- dev.Run(ctx) }()
	fmt.Println("heartbeat", (<-connected).Heartbeat.Interval)

	id, _ := wire.ParseMessageID("0190f3a5-0b6e-7d21-8c4f-5e6a7b8c9d0e")
	online, err := srv.Push("pk_demo", "phone-1", id, wire.PushHighPriority, []byte(`{"notification":{"title":"Hi"}}`))
	acked := <-h.acked // the device printed before it acknowledged
	fmt.Println("pushed to an online device:", online, err)
	fmt.Println("acknowledged", acked)

	dev.Close()
	<-ran
	stop()
	<-served
	// Output:
	// heartbeat 4m0s
	// device got 0190f3a5-0b6e-7d21-8c4f-5e6a7b8c9d0e: {"notification":{"title":"Hi"}}
	// pushed to an online device: true <nil>
	// acknowledged 0190f3a5-0b6e-7d21-8c4f-5e6a7b8c9d0e
}
