// Package servicetest finds the external services of integration tests
// (PostgreSQL, Redis, NATS, ClickHouse, KurrentDB) in the environment.
package servicetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// RequireEnv, set to 1, makes a missing service fail the test instead of
// skipping it (CI sets it).
const RequireEnv = "PUSHLEDGER_REQUIRE_SERVICES"

// URL returns the address of a service from the environment variable env.
// When it is unset the test is skipped with a message saying how to run
// it, or fails when RequireEnv is 1.
func URL(t testing.TB, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s is not set, and %s=1 requires the service", env, RequireEnv)
	}
	t.Skipf("integration test skipped: set %s to the service's address to run it", env)
	return ""
}

// PostgresSchema returns the address of the test database
// (PUSHLEDGER_POSTGRES_URL) with a schema of its own as search path, so
// that tests do not see each other's tables; the schema is dropped when
// the test ends.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	base := URL(t, "PUSHLEDGER_POSTGRES_URL")
	ctx := context.Background()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "pl_test_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to PUSHLEDGER_POSTGRES_URL: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		conn.Close(ctx)
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
		conn.Close(context.Background())
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("PUSHLEDGER_POSTGRES_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
