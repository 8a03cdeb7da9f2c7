// Package schema publishes pushledger's machine-readable formats. Event
// schemas (JSON Schema, draft 2020-12) describe the JSON data of every
// persisted ledger event, one file per event type: events/<type>.json.
package schema

import "embed"

// EventSchemas holds events/<type>.json for every persisted event type;
// each schema's $id is https://pushledger.dev/schema/events/<type>.json.
//
//go:embed events/*.json
var EventSchemas embed.FS
