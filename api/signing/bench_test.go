package signing_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/pushledger/pushledger/api/signing"
)

// BenchmarkVerify measures Verify (header parsing, canonical query, body
// hash, HMAC, constant-time compare) for several body sizes. The nonce
// store accepts everything so one signed request can be replayed; the
// store is measured by BenchmarkMemoryNoncesUse.
func BenchmarkVerify(b *testing.B) {
	now := time.Unix(katTimestamp, 0)
	for _, size := range []int{0, 1 << 10, 64 << 10} {
		b.Run("body="+strconv.Itoa(size), func(b *testing.B) {
			v := newVerifier(b, signing.Config{Apps: testApps(), Nonces: acceptAll{}, MaxBody: 1 << 20, Now: func() time.Time { return now }})
			body := make([]byte, size)
			r := signedRequest(b, "POST", "/v1/apps/app_3f9c/messages?"+katRawQuery, katAppKey, []byte(katSecret), now, katNonce, body)
			ctx := context.Background()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(ctx, r, body); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifications/s")
		})
	}
}

func BenchmarkMemoryNoncesUse(b *testing.B) {
	const distinct = 1 << 16
	nonces := make([]string, distinct)
	for i := range nonces {
		nonces[i] = signing.NewNonce()
	}
	t := time.Unix(katTimestamp, 0)
	m := signing.NewMemoryNonces(func() time.Time { return t })
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// 1000 nonces/ms of fake time, each remembered 10 ms: about 10k live.
		if i%1000 == 0 {
			t = t.Add(time.Millisecond)
		}
		if _, err := m.Use(ctx, katAppKey, nonces[i%distinct], t.Add(10*time.Millisecond)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(m.Len()), "live")
}
