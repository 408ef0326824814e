package auth

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"go.uber.org/zap"
)

// Limits of JWKS fetches.
const (
	jwksMinInterval = 10 * time.Second
	jwksMaxAge      = 10 * time.Minute
	jwksTimeout     = 5 * time.Second
	jwksMaxBytes    = 1 << 20
)

// jwks caches the keys of a JSON Web Key Set URL.
type jwks struct {
	url    string
	ctx    context.Context // ends at the config's cleanup, and its fetches with it
	client *http.Client
	logger *zap.Logger

	minInterval time.Duration
	maxAge      time.Duration
	timeout     time.Duration

	mu          sync.Mutex
	keys        []verifyKey
	fetched     time.Time // when keys were fetched; zero before the first success
	lastAttempt time.Time
	inflight    chan struct{} // closed when the running fetch ends
}

func newJWKS(ctx context.Context, url string, logger *zap.Logger) *jwks {
	return &jwks{
		url:         url,
		ctx:         ctx,
		client:      &http.Client{},
		logger:      logger,
		minInterval: jwksMinInterval,
		maxAge:      jwksMaxAge,
		timeout:     jwksTimeout,
	}
}

// lookup returns the keys of id kid, or every key when kid is empty. It
// fetches the set first when there is none yet, when it is older than
// maxAge, or when kid is not in it; fetches are at most one per
// minInterval, and concurrent lookups share one.
func (c *jwks) lookup(kid string, now time.Time) []verifyKey {
	keys, fresh := c.find(kid, now)
	if len(keys) > 0 && fresh {
		return keys
	}
	c.refresh(now)
	keys, _ = c.find(kid, now)
	return keys
}

func (c *jwks) find(kid string, now time.Time) ([]verifyKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh := !c.fetched.IsZero() && now.Before(c.fetched.Add(c.maxAge))
	if kid == "" {
		return c.keys, fresh
	}
	var keys []verifyKey
	for _, k := range c.keys {
		if k.kid == kid {
			keys = append(keys, k)
		}
	}
	return keys, fresh
}

// refresh fetches the set unless one was tried less than minInterval before
// now; when a fetch is under way it waits for that one instead.
func (c *jwks) refresh(now time.Time) {
	c.mu.Lock()
	if ch := c.inflight; ch != nil {
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.ctx.Done():
		}
		return
	}
	if !c.lastAttempt.IsZero() && now.Before(c.lastAttempt.Add(c.minInterval)) {
		c.mu.Unlock()
		return
	}
	c.lastAttempt = now
	ch := make(chan struct{})
	c.inflight = ch
	c.mu.Unlock()

	keys, err := c.fetch()

	c.mu.Lock()
	if err == nil {
		c.keys, c.fetched = keys, now
	}
	c.inflight = nil
	c.mu.Unlock()
	close(ch)
	if err != nil {
		c.logger.Warn("fetching JWKS failed; keeping the keys fetched before",
			zap.String("url", c.url), zap.Error(err))
	} else {
		c.logger.Debug("fetched JWKS", zap.String("url", c.url), zap.Int("keys", len(keys)))
	}
}

func (c *jwks) fetch() ([]verifyKey, error) {
	// The timeout covers the whole exchange, body included.
	ctx, cancel := context.WithTimeout(c.ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, jwksMaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > jwksMaxBytes {
		return nil, fmt.Errorf("larger than %d bytes", jwksMaxBytes)
	}
	return parseJWKS(body)
}

// parseJWKS reads the usable keys of a JWK Set. Each key is decoded on its
// own (by go-jose), so one key of an unknown kind does not hide the others.
func parseJWKS(body []byte) ([]verifyKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JWK Set: %w", err)
	}
	var keys []verifyKey
	for _, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			continue
		}
		if !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
			continue
		}
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if pub.N.BitLen() < minRSABits {
				continue
			}
		case []byte: // oct: a shared secret has no place in a public set
			continue
		}
		algs, err := algorithms(k.Key)
		if err != nil {
			continue
		}
		if k.Algorithm != "" {
			if !slices.Contains(algs, k.Algorithm) {
				continue
			}
			algs = []string{k.Algorithm}
		}
		keys = append(keys, verifyKey{key: k.Key, algs: algs, kid: k.KeyID})
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signature key in the set")
	}
	return keys, nil
}
