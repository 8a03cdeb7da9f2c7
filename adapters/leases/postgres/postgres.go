// Package pgleases is the delivery runners' lease table on PostgreSQL
// (sagas.Leases): runners on several nodes share the message partitions
// through it. Expiry is judged by the database's clock, so the nodes'
// clocks do not need to agree.
package pgleases

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Schema creates the lease tables (idempotent); New applies it.
const Schema = `
CREATE TABLE IF NOT EXISTS pushledger_leases (
	part  integer     PRIMARY KEY,
	owner text        NOT NULL,
	until timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS pushledger_lease_owners (
	owner      text        PRIMARY KEY,
	seen_until timestamptz NOT NULL
);`

// Leases is a sagas.Leases on PostgreSQL.
type Leases struct {
	db *pgxpool.Pool
}

// New connects to url, creates the tables if needed and returns the lease
// table. Close releases the connections.
func New(ctx context.Context, url string) (*Leases, error) {
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("pgleases: %w", err)
	}
	if _, err := db.Exec(ctx, Schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("pgleases: schema: %w", err)
	}
	return &Leases{db: db}, nil
}

// Close closes the connection pool.
func (l *Leases) Close() { l.db.Close() }

// Acquire takes partition part for owner until the database's now + ttl,
// or renews owner's lease: in one statement, which takes the row only when
// it is free, expired or owner's already.
func (l *Leases) Acquire(ctx context.Context, part int, owner string, ttl time.Duration) (bool, error) {
	secs := ttl.Seconds()
	if _, err := l.db.Exec(ctx, `
		INSERT INTO pushledger_lease_owners (owner, seen_until) VALUES ($1, now() + make_interval(secs => $2))
		ON CONFLICT (owner) DO UPDATE SET seen_until = excluded.seen_until`, owner, secs); err != nil {
		return false, fmt.Errorf("pgleases: %w", err)
	}
	var got string
	err := l.db.QueryRow(ctx, `
		INSERT INTO pushledger_leases (part, owner, until) VALUES ($1, $2, now() + make_interval(secs => $3))
		ON CONFLICT (part) DO UPDATE SET owner = excluded.owner, until = excluded.until
			WHERE pushledger_leases.owner = excluded.owner OR pushledger_leases.until < now()
		RETURNING owner`, part, owner, secs).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // held by another owner
	}
	if err != nil {
		return false, fmt.Errorf("pgleases: %w", err)
	}
	return got == owner, nil
}

// Release gives up owner's lease of part.
func (l *Leases) Release(ctx context.Context, part int, owner string) error {
	if _, err := l.db.Exec(ctx, `DELETE FROM pushledger_leases WHERE part = $1 AND owner = $2`, part, owner); err != nil {
		return fmt.Errorf("pgleases: %w", err)
	}
	return nil
}

// Owners counts the owners seen within their last lease time.
func (l *Leases) Owners(ctx context.Context) (int, error) {
	var n int
	if err := l.db.QueryRow(ctx, `SELECT count(*) FROM pushledger_lease_owners WHERE seen_until > now()`).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgleases: %w", err)
	}
	return n, nil
}
