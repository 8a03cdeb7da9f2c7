package gateway

import "sync"

// registryShards is the number of shards of the online-device map: enough
// that Push from many goroutines and CONNECTs on every event loop rarely
// meet on one lock.
const registryShards = 64

type deviceKey struct{ app, device string }

// registry maps (app key, device id) to the device's current connection,
// sharded by a hash of the key. Safe for concurrent use.
type registry struct {
	shards [registryShards]registryShard
}

type registryShard struct {
	mu sync.RWMutex
	m  map[deviceKey]*session
	_  [40]byte // keep shards on separate cache lines
}

func newRegistry() *registry {
	r := new(registry)
	for i := range r.shards {
		r.shards[i].m = make(map[deviceKey]*session)
	}
	return r
}

// shard hashes the key with FNV-1a (no allocation, unlike concatenating).
func (r *registry) shard(k deviceKey) *registryShard {
	h := uint32(2166136261)
	for i := 0; i < len(k.app); i++ {
		h = (h ^ uint32(k.app[i])) * 16777619
	}
	h = (h ^ 0xff) * 16777619
	for i := 0; i < len(k.device); i++ {
		h = (h ^ uint32(k.device[i])) * 16777619
	}
	return &r.shards[h%registryShards]
}

func (r *registry) get(k deviceKey) *session {
	sh := r.shard(k)
	sh.mu.RLock()
	s := sh.m[k]
	sh.mu.RUnlock()
	return s
}

// put makes s the device's connection and returns the one it replaces,
// or nil.
func (r *registry) put(k deviceKey, s *session) (old *session) {
	sh := r.shard(k)
	sh.mu.Lock()
	old = sh.m[k]
	sh.m[k] = s
	sh.mu.Unlock()
	return old
}

// remove deletes the device's entry if it is still s.
func (r *registry) remove(k deviceKey, s *session) {
	sh := r.shard(k)
	sh.mu.Lock()
	if sh.m[k] == s {
		delete(sh.m, k)
	}
	sh.mu.Unlock()
}
