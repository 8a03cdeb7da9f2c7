package policy

import (
	"reflect"
	"sync"

	"github.com/pushledger/pushledger/domain/app"
)

// Resolver gives each app its delivery policy in force: the app's own
// (app.App.Policy) read onto the platform's default, or the default. A
// result is kept until the app's policy or the default changes, so that
// deciding about a message does not parse JSON. Safe for concurrent use.
type Resolver struct {
	base      func() Config
	onInvalid func(appID string, err error)

	mu    sync.Mutex
	cache map[string]resolved // by app id
}

type resolved struct {
	version int    // the app's version it was read at
	base    Config // the default it was read onto
	cfg     Config
}

// NewResolver reads apps' policies onto base(), which is asked at every
// call (a reloaded default applies at once). onInvalid, when not nil,
// hears of an app policy that does not validate (the app then gets the
// default), once per version of the app.
func NewResolver(base func() Config, onInvalid func(appID string, err error)) *Resolver {
	if base == nil {
		base = DefaultConfig
	}
	return &Resolver{base: base, onInvalid: onInvalid, cache: map[string]resolved{}}
}

// Default returns the platform's default policy.
func (r *Resolver) Default() Config { return r.base() }

// For returns app a's policy in force.
func (r *Resolver) For(a *app.App) Config {
	base := r.base()
	if len(a.Policy) == 0 {
		return base
	}
	r.mu.Lock()
	c, ok := r.cache[a.ID]
	r.mu.Unlock()
	if ok && c.version == a.Version && reflect.DeepEqual(c.base, base) {
		return c.cfg
	}
	cfg, err := Parse(a.Policy, base)
	if err != nil {
		if r.onInvalid != nil {
			r.onInvalid(a.ID, err)
		}
		cfg = base
	}
	r.mu.Lock()
	r.cache[a.ID] = resolved{version: a.Version, base: base, cfg: cfg}
	r.mu.Unlock()
	return cfg
}
