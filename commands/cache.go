package commands

import "sync"

// Cache holds folded states of recently used streams, each with the
// stream revision it was folded up to, so that a load reads and folds only
// the events appended since instead of the whole stream. Every entry must
// be the fold of its stream's events 0..Rev: any such entry is correct,
// however old, because a load reads on from Rev+1.
//
// An entry belongs to whoever took it: Take removes it and the taker puts
// its result back with Put, so two users never fold into one state. A
// user that fails puts nothing back; the next load reads the whole
// stream. Past its size, Put drops an entry in map order.
type Cache[S any] struct {
	mu   sync.Mutex
	size int
	m    map[string]Cached[S]
}

// Cached is a stream's state folded up to revision Rev.
type Cached[S any] struct {
	State S
	Rev   int64
}

// NewCache returns a cache of at most size streams.
func NewCache[S any](size int) *Cache[S] {
	return &Cache[S]{size: size, m: make(map[string]Cached[S], size)}
}

// Take removes and returns the entry of key.
func (c *Cache[S]) Take(key string) (Cached[S], bool) {
	if c == nil {
		return Cached[S]{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if ok {
		delete(c.m, key)
	}
	return e, ok
}

// Put stores e as key's entry unless the cache holds a later one.
func (c *Cache[S]) Put(key string, e Cached[S]) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.m[key]
	if ok && old.Rev >= e.Rev {
		return
	}
	if !ok && len(c.m) >= c.size {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = e
}

// Len is the number of entries.
func (c *Cache[S]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
