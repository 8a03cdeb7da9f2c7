package projections

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/pushledger/pushledger/adapters/ledger"
	"github.com/pushledger/pushledger/domain/app"
	"github.com/pushledger/pushledger/domain/device"
	"github.com/pushledger/pushledger/domain/message"
)

// DeviceView is the registry's view of one device.
type DeviceView struct {
	AppID        string         `json:"app_id"`
	DeviceID     string         `json:"device_id"`
	Profile      device.Profile `json:"profile"`
	Alias        string         `json:"alias,omitempty"`
	Tags         []string       `json:"tags,omitempty"`
	Active       bool           `json:"active"`
	RegisteredAt time.Time      `json:"registered_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
	Revision     uint64         `json:"revision"`
}

func (v *DeviceView) domain() device.Device {
	d := device.Device{AppID: v.AppID, ID: v.DeviceID, Profile: v.Profile, Alias: v.Alias, Active: v.Active,
		Registered: v.DeviceID != "", RegisteredAt: v.RegisteredAt, UpdatedAt: v.UpdatedAt}
	if len(v.Tags) > 0 {
		d.Tags = map[string]struct{}{}
		for _, t := range v.Tags {
			d.Tags[t] = struct{}{}
		}
	}
	return d
}

func viewOf(d *device.Device, rev uint64) DeviceView {
	return DeviceView{AppID: d.AppID, DeviceID: d.ID, Profile: d.Profile, Alias: d.Alias, Tags: d.TagList(),
		Active: d.Active, RegisteredAt: d.RegisteredAt, UpdatedAt: d.UpdatedAt, Revision: rev}
}

// Devices is the device registry projection: devices by id, user alias,
// tag and vendor token, and the number of active devices per app. Only
// active (registered, not logged out) devices are indexed.
type Devices struct{}

const dvPrefix = "dv"

func (Devices) Name() string   { return "device-registry" }
func (Devices) Prefix() []byte { return []byte(dvPrefix + "\x00") }
func (Devices) Filter() ledger.Filter {
	return ledger.Filter{StreamPrefixes: []string{device.StreamPrefix}}
}

func dvKey(app, id string) []byte             { return key(dvPrefix, "d", app, id) }
func dvAliasKey(app, alias, id string) []byte { return key(dvPrefix, "a", app, alias, id) }
func dvTagKey(app, tag, id string) []byte     { return key(dvPrefix, "t", app, tag, id) }
func dvTokenKey(ch, token string) []byte      { return key(dvPrefix, "k", ch, token) }
func dvCountKey(app string) []byte            { return key(dvPrefix, "n", app) }
func dvBriefKey(app, id string) []byte        { return key(dvPrefix, "b", app, id) }

// briefsReadyKey marks a store whose brief index (dv b keys) is complete:
// stores of earlier releases get it built by EnsureDeviceBriefs. It lies
// outside the projection's prefix, so a rebuild keeps it: the events
// folded again write the index as they go.
var briefsReadyKey = []byte("meta\x00device-briefs")

// appendBrief encodes what a broadcast needs of an active device (the
// brief index's value): alias and tags, length-prefixed.
func appendBrief(dst []byte, v *DeviceView) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(v.Alias)))
	dst = append(dst, v.Alias...)
	dst = binary.AppendUvarint(dst, uint64(len(v.Tags)))
	for _, t := range v.Tags {
		dst = binary.AppendUvarint(dst, uint64(len(t)))
		dst = append(dst, t...)
	}
	return dst
}

// errCorruptBrief: a brief index value does not decode.
var errCorruptBrief = errors.New("corrupt device brief")

// decodeBrief decodes appendBrief's encoding into b.
func decodeBrief(v []byte, b *DeviceBrief) error {
	uvarint := func() (uint64, error) {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) { // a count or length never exceeds what follows
			return 0, errCorruptBrief
		}
		v = v[k:]
		return n, nil
	}
	str := func() (string, error) {
		n, err := uvarint()
		if err != nil {
			return "", err
		}
		s := string(v[:n])
		v = v[n:]
		return s, nil
	}
	var err error
	if b.Alias, err = str(); err != nil {
		return err
	}
	n, err := uvarint()
	if err != nil {
		return err
	}
	b.Tags = nil
	for range n {
		t, err := str()
		if err != nil {
			return err
		}
		b.Tags = append(b.Tags, t)
	}
	if len(v) != 0 {
		return errCorruptBrief
	}
	return nil
}

// EnsureDeviceBriefs builds the brief index of a store written by a
// release without it (from the device views, in batches), then marks it
// complete. Call it before the registry's runner starts.
func EnsureDeviceBriefs(st Store) error {
	if _, err := st.Get(briefsReadyKey); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	prefix := key(dvPrefix, "d", "") // every app's views
	type brief struct{ k, v []byte }
	var batch []brief
	flush := func() error {
		err := st.Update(func(w Writer) error {
			for _, b := range batch {
				if err := w.Set(b.k, b.v); err != nil {
					return err
				}
			}
			return nil
		})
		batch = batch[:0]
		return err
	}
	var derr error
	err := st.Scan(prefix, PrefixEnd(prefix), false, func(_, raw []byte) bool {
		var v DeviceView
		if derr = json.Unmarshal(raw, &v); derr != nil {
			return false
		}
		if v.Active {
			batch = append(batch, brief{dvBriefKey(v.AppID, v.DeviceID), appendBrief(nil, &v)})
			if len(batch) == 4096 {
				derr = flush()
			}
		}
		return derr == nil
	})
	if err = errors.Join(err, derr); err != nil {
		return fmt.Errorf("device briefs: %w", err)
	}
	if err := flush(); err != nil {
		return err
	}
	return st.Update(func(w Writer) error { return w.Set(briefsReadyKey, []byte("1")) })
}

// Apply implements Projection.
func (Devices) Apply(w Writer, events []ledger.RecordedEvent) error {
	for _, re := range events {
		var v DeviceView
		e, err := device.Decode(re.Type, re.Data)
		if err != nil {
			return err
		}
		appID, id, ok := splitDeviceStream(re.Stream)
		if !ok {
			return fmt.Errorf("device stream name %q", re.Stream)
		}
		old, err := w.Get(dvKey(appID, id))
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		default:
			if err := json.Unmarshal(old, &v); err != nil {
				return err
			}
			if re.Revision <= v.Revision && v.DeviceID != "" {
				continue
			}
		}
		d := v.domain()
		if err := d.Evolve(e); err != nil {
			return fmt.Errorf("%s@%d: %w", re.Stream, re.Revision, err)
		}
		nv := viewOf(&d, re.Revision)
		if err := reindex(w, appID, id, &v, &nv); err != nil {
			return err
		}
		b, err := json.Marshal(&nv)
		if err != nil {
			return err
		}
		if err := w.Set(dvKey(appID, id), b); err != nil {
			return err
		}
	}
	return nil
}

// splitDeviceStream splits "device-<app>-<id>"; app ids contain no '-'.
func splitDeviceStream(s string) (app, id string, ok bool) {
	rest, ok := strings.CutPrefix(s, device.StreamPrefix)
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "-")
}

// reindex moves the secondary index entries of a device from old to new.
func reindex(w Writer, app, id string, old, nv *DeviceView) error {
	type entry = string
	idx := func(v *DeviceView) map[entry]struct{} {
		m := map[entry]struct{}{}
		if !v.Active {
			return m
		}
		if v.Alias != "" {
			m[string(dvAliasKey(app, v.Alias, id))] = struct{}{}
		}
		for _, t := range v.Tags {
			m[string(dvTagKey(app, t, id))] = struct{}{}
		}
		for ch, tok := range v.Profile.Tokens {
			m[string(dvTokenKey(ch, tok))] = struct{}{}
		}
		return m
	}
	was, now := idx(old), idx(nv)
	owner := app + "\x00" + id
	for k := range was {
		if _, keep := now[k]; keep {
			continue
		}
		// A token's entry passes to the device that registered the token
		// last: only the entry's owner removes it.
		v, err := w.Get([]byte(k))
		if errors.Is(err, ErrNotFound) || (err == nil && string(v) != owner) {
			continue
		}
		if err != nil {
			return err
		}
		if err := w.Delete([]byte(k)); err != nil {
			return err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if _, had := was[k]; !had {
			if err := w.Set([]byte(k), []byte(owner)); err != nil {
				return err
			}
		}
	}
	switch {
	case nv.Active && (!old.Active || old.Alias != nv.Alias || !slices.Equal(old.Tags, nv.Tags)):
		if err := w.Set(dvBriefKey(app, id), appendBrief(nil, nv)); err != nil {
			return err
		}
	case !nv.Active && old.Active:
		if err := w.Delete(dvBriefKey(app, id)); err != nil {
			return err
		}
	}
	if old.Active != nv.Active {
		n, err := count(w, dvCountKey(app))
		if err != nil {
			return err
		}
		if nv.Active {
			n++
		} else if n > 0 {
			n--
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], n)
		return w.Set(dvCountKey(app), b[:])
	}
	return nil
}

type getter interface{ Get([]byte) ([]byte, error) }

func count(g getter, k []byte) (uint64, error) {
	v, err := g.Get(k)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil || len(v) != 8 {
		return 0, errors.Join(err, errors.New("corrupt counter"))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Registry answers queries on the device registry projection.
type Registry struct{ Store Store }

// Device returns the view of a device (active or not), or ErrNotFound.
func (r Registry) Device(app, id string) (DeviceView, error) {
	return getJSON[DeviceView](r.Store, dvKey(app, id))
}

// getJSON reads the JSON value of k as a T.
func getJSON[T any](s Store, k []byte) (T, error) {
	var v T
	b, err := s.Get(k)
	if err != nil {
		return v, err
	}
	return v, json.Unmarshal(b, &v)
}

// brief is Device decoded as a DeviceBrief: audiences need neither the
// profile, the tokens nor the times (decoding the brief alone made batched
// accepts about 8% faster, BenchmarkREST/accept-batch-1000).
func (r Registry) brief(app, id string) (DeviceBrief, error) {
	return getJSON[DeviceBrief](r.Store, dvKey(app, id))
}

// ActiveCount is the number of active devices of app.
func (r Registry) ActiveCount(app string) (uint64, error) { return count(r.Store, dvCountKey(app)) }

// ByToken finds the device holding a vendor token.
func (r Registry) ByToken(channel, token string) (app, id string, err error) {
	v, err := r.Store.Get(dvTokenKey(channel, token))
	if err != nil {
		return "", "", err
	}
	app, id, _ = strings.Cut(string(v), "\x00")
	return app, id, nil
}

// ids scans an index prefix whose keys end in a device id.
func (r Registry) ids(prefix []byte, fn func(id string) bool) error {
	return r.Store.Scan(prefix, PrefixEnd(prefix), false, func(k, _ []byte) bool {
		return fn(string(k[len(prefix):]))
	})
}

// ByAlias calls fn with the active devices bound to alias.
func (r Registry) ByAlias(app, alias string, fn func(id string) bool) error {
	return r.ids(key(dvPrefix, "a", app, alias, ""), fn)
}

// ByTag calls fn with the active devices carrying tag.
func (r Registry) ByTag(app, tag string, fn func(id string) bool) error {
	return r.ids(key(dvPrefix, "t", app, tag, ""), fn)
}

// All calls fn with every active device of app.
func (r Registry) All(app string, fn func(v DeviceView) bool) error {
	return eachActive(r, app, func(v DeviceView) bool { return v.Active }, fn)
}

// DeviceBrief is the part of a DeviceView that audiences need.
type DeviceBrief struct {
	DeviceID string   `json:"device_id"`
	Alias    string   `json:"alias,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	Active   bool     `json:"active"`
}

// Active calls fn with the brief of every active device of app: All
// without decoding profiles and times, for broadcasts to many devices.
func (r Registry) Active(app string, fn func(v DeviceBrief) bool) error {
	if _, err := r.Store.Get(briefsReadyKey); errors.Is(err, ErrNotFound) {
		return eachActive(r, app, func(v DeviceBrief) bool { return v.Active }, fn)
	} else if err != nil {
		return err
	}
	// The brief index: a few bytes per active device, no JSON.
	prefix := key(dvPrefix, "b", app, "")
	var derr error
	err := r.Store.Scan(prefix, PrefixEnd(prefix), false, func(k, raw []byte) bool {
		b := DeviceBrief{DeviceID: string(k[len(prefix):]), Active: true}
		if derr = decodeBrief(raw, &b); derr != nil {
			return false
		}
		return fn(b)
	})
	return errors.Join(err, derr)
}

// eachActive decodes app's device views as T and calls fn with the active
// ones.
func eachActive[T any](r Registry, app string, active func(T) bool, fn func(T) bool) error {
	prefix := key(dvPrefix, "d", app, "")
	var derr error
	err := r.Store.Scan(prefix, PrefixEnd(prefix), false, func(_, b []byte) bool {
		var v T
		if derr = json.Unmarshal(b, &v); derr != nil {
			return false
		}
		if !active(v) {
			return true
		}
		return fn(v)
	})
	return errors.Join(err, derr)
}

// Blacklist tells whether a target is excluded (an app: *app.App).
type Blacklist interface {
	// Excludes reports whether a device is blacklisted: by id, user alias
	// or tag.
	Excludes(deviceID, alias string, tags []string) bool
	// BlacklistValues lists the blacklisted values of a kind (app.KindDevice,
	// app.KindUser, app.KindGroup).
	BlacklistValues(kind string) []string
}

// activeExcluded counts the active devices of app that bl excludes: a
// broadcast's target count leaves them out.
func (r Registry) activeExcluded(appID string, bl Blacklist) (int, error) {
	if bl == nil {
		return 0, nil
	}
	ids := map[string]struct{}{}
	add := func(id string) bool { ids[id] = struct{}{}; return true }
	for _, id := range bl.BlacklistValues(app.KindDevice) {
		add(id)
	}
	for _, alias := range bl.BlacklistValues(app.KindUser) {
		if err := r.ByAlias(appID, alias, add); err != nil {
			return 0, err
		}
	}
	for _, tag := range bl.BlacklistValues(app.KindGroup) {
		if err := r.ByTag(appID, tag, add); err != nil {
			return 0, err
		}
	}
	n := 0
	for id := range ids {
		v, err := r.brief(appID, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if v.Active {
			n++
		}
	}
	return n, nil
}

// ErrEmptyAudience: the audience resolves to no device.
var ErrEmptyAudience = errors.New("audience resolves to no device")

// Resolve returns the active device ids of app that aud selects, minus
// blacklisted devices, aliases and groups (tags). Broadcasts are not resolved
// into a list (nil ids); their size is the number of active devices.
func (r Registry) Resolve(app string, aud message.Audience, bl Blacklist) (ids []string, n int, err error) {
	seen := map[string]struct{}{}
	add := func(id string) {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			ids = append(ids, id)
		}
	}
	allowed := func(v DeviceBrief) bool { return bl == nil || !bl.Excludes(v.DeviceID, v.Alias, v.Tags) }
	check := func(id string) error {
		v, err := r.brief(app, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if v.Active && allowed(v) && matchTags(v.Tags, aud.Tags) {
			add(id)
		}
		return nil
	}
	switch {
	case aud.Broadcast:
		c, err := r.ActiveCount(app)
		if err != nil {
			return nil, 0, err
		}
		excluded, err := r.activeExcluded(app, bl)
		return nil, int(c) - min(excluded, int(c)), err
	case len(aud.DeviceIDs) > 0:
		for _, id := range aud.DeviceIDs {
			if err := check(id); err != nil {
				return nil, 0, err
			}
		}
	case len(aud.Aliases) > 0:
		for _, a := range aud.Aliases {
			var cand []string
			if err := r.ByAlias(app, a, func(id string) bool { cand = append(cand, id); return true }); err != nil {
				return nil, 0, err
			}
			for _, id := range cand {
				if err := check(id); err != nil {
					return nil, 0, err
				}
			}
		}
	case aud.Tags != nil:
		// Candidates from the smallest positive index, then filtered.
		seed := aud.Tags.AllOf
		if len(seed) == 0 {
			seed = aud.Tags.AnyOf
		} else {
			seed = seed[:1]
		}
		cands := map[string]struct{}{}
		for _, t := range seed {
			if err := r.ByTag(app, t, func(id string) bool { cands[id] = struct{}{}; return true }); err != nil {
				return nil, 0, err
			}
		}
		for _, id := range slices.Sorted(maps.Keys(cands)) {
			if err := check(id); err != nil {
				return nil, 0, err
			}
		}
	}
	return ids, len(ids), nil
}

func matchTags(tags []string, e *message.TagExpr) bool {
	if e == nil {
		return true
	}
	has := func(t string) bool { return slices.Contains(tags, t) }
	for _, t := range e.AllOf {
		if !has(t) {
			return false
		}
	}
	if len(e.AnyOf) > 0 && !slices.ContainsFunc(e.AnyOf, has) {
		return false
	}
	return !slices.ContainsFunc(e.NoneOf, has)
}
