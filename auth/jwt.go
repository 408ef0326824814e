package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/golang-jwt/jwt/v5"

	"github.com/ssegate/caddy-sse/topic"
)

// Defaults of JWT.
const (
	// DefaultSubscribeClaim is where a token lists the topics it may read.
	DefaultSubscribeClaim = "sse.subscribe"
	// DefaultPublishClaim is where a token lists the topics it may publish to.
	DefaultPublishClaim = "sse.publish"
	// DefaultCookie and DefaultQuery name the cookie and query parameter
	// that carry a subscriber's token by default.
	DefaultCookie = "sse_token"
	DefaultQuery  = "token"

	// maxTokenLength bounds the tokens parsed; longer ones are malformed.
	maxTokenLength = 16 << 10
	// minRSABits is the smallest RSA key accepted.
	minRSABits = 2048
)

// JWT verifies JSON Web Tokens and reads the topics they grant.
//
// Every key pins the algorithms a token may use with it: an HMAC secret
// HS256, HS384 or HS512; an RSA key RS256..RS512 and PS256..PS512; an ECDSA
// key the ES algorithm of its curve (P-256 ES256, P-384 ES384, P-521 ES512);
// an Ed25519 key EdDSA. "none" is never accepted, nor a token whose alg no
// configured key is pinned to (a token signed HS256 with an RSA public key
// as the secret is refused). Several keys may be configured, for rotation:
// a token is accepted when one key of its algorithm verifies it.
//
// Mercure compatibility: with claim `mercure.subscribe` (or
// `mercure.publish`) tokens minted for a Mercure hub, `{"mercure":
// {"subscribe": [...], "publish": [...]}}`, are accepted as they are, with
// the same key. Their topic selectors are read the way Mercure reads them as
// far as this goes: `*` grants every topic, and any other selector grants
// the topic with exactly that name. URI templates (`.../books/{id}`) are not
// expanded: such a selector only matches a topic literally named so. Stars
// inside a Mercure selector are literal, not patterns. Topics must be named
// the same as in the Mercure hub (see the handler's topic option). Mercure
// clients that send their token in Mercure's cookie or query parameter work
// with `token cookie mercureAuthorization` and `token query authorization`.
// Mercure's other claims (payload, and the private updates of publish) are
// ignored.
type JWT struct {
	// HMAC secrets; placeholders such as `{env.SSE_JWT_SECRET}` are expanded
	// at provisioning. Use at least 32 random bytes.
	Keys []string `json:"keys,omitempty"`

	// Files holding PEM public keys (PUBLIC KEY, RSA PUBLIC KEY or
	// CERTIFICATE blocks; several blocks in one file are several keys). RSA
	// keys need at least 2048 bits. Private keys are refused: give the
	// public half (`openssl pkey -pubout`).
	KeyFiles []string `json:"key_files,omitempty"`

	// URL of a JSON Web Key Set. It is fetched when first needed, at most
	// once per 10 seconds, with a 5 second timeout and a 1 MiB limit, and
	// again when its keys are 10 minutes old or a token names a key id (kid)
	// it lacks. Keys with `use` other than `sig`, symmetric (`oct`) keys and
	// private keys are ignored; a key's `alg`, when present, is the only
	// algorithm it verifies. While a refresh fails, the keys fetched before
	// stay in use.
	JWKS string `json:"jwks,omitempty"`

	// Where a token is looked for, in order; the first source that carries a
	// token is the one verified, the rest are not looked at. Default for
	// subscribing: the Authorization header (Bearer), the cookie
	// `sse_token`, the query parameter `token`. Default for publishing: the
	// Authorization header only (a cookie would let any page the user visits
	// publish with the user's credential).
	Token []TokenSource `json:"token,omitempty"`

	// The dot-separated path of the claim listing the topic patterns a token
	// grants (a list of strings, or one string). Default: `sse.subscribe`
	// for subscribing, `sse.publish` for publishing. A path starting with
	// `mercure.` reads Mercure's topic selectors (see above). A token without
	// the claim grants nothing.
	Claim string `json:"claim,omitempty"`

	// The issuer (`iss`) tokens must have. Placeholders are expanded at
	// provisioning. Default: any.
	Issuer string `json:"issuer,omitempty"`

	// An audience (`aud`) tokens must include. Placeholders are expanded at
	// provisioning. Default: any.
	Audience string `json:"audience,omitempty"`

	// Refuse tokens without an expiry (`exp`). Default: false, since Mercure
	// mints tokens without one. A token's exp, when present, is always
	// checked, and ends the stream it opened.
	RequireExp bool `json:"require_exp,omitempty"`

	static    []verifyKey
	jwks      *jwks
	issuer    string
	audience  string
	claimPath []string
	mercure   bool
	sources   []TokenSource
}

// TokenSource says where a request may carry a token.
type TokenSource struct {
	// `header` (Authorization: Bearer <token>), `cookie` or `query`.
	From string `json:"from"`
	// The name of the cookie or query parameter; empty for header.
	Name string `json:"name,omitempty"`
}

func (t TokenSource) String() string {
	switch t.From {
	case "header":
		return "Authorization: Bearer"
	case "cookie":
		return "cookie " + t.Name
	case "query":
		return "query " + t.Name
	}
	return t.From
}

// use says what a JWT is for, which sets its defaults.
type use struct {
	claim   string
	sources []TokenSource
}

var (
	subscribeUse = use{DefaultSubscribeClaim, []TokenSource{{From: "header"}, {From: "cookie", Name: DefaultCookie}, {From: "query", Name: DefaultQuery}}}
	publishUse   = use{DefaultPublishClaim, []TokenSource{{From: "header"}}}
)

// verifyKey is a key with the algorithms it is pinned to.
type verifyKey struct {
	key  any // []byte, *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	algs []string
	kid  string // from a JWKS; empty for configured keys
}

func (k verifyKey) allows(alg string) bool { return slices.Contains(k.algs, alg) }

// algorithms returns the JWS algorithms key may verify, or an error for a
// key of a kind or size this package refuses.
func algorithms(key any) ([]string, error) {
	switch k := key.(type) {
	case []byte:
		return []string{"HS256", "HS384", "HS512"}, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d are needed", k.N.BitLen(), minRSABits)
		}
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("ECDSA key on curve %s, not P-256, P-384 or P-521", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", key)
}

// Provision prepares a JWT used for subscribing; Subscribe.Provision calls
// it. PublishJWT has its own.
func (j *JWT) Provision(ctx caddy.Context) error { return j.provision(ctx, subscribeUse) }

// Validate checks a JWT used for subscribing.
func (j *JWT) Validate() error { return j.validate(subscribeUse) }

func (j *JWT) validate(u use) error {
	if len(j.Keys) == 0 && len(j.KeyFiles) == 0 && j.JWKS == "" {
		return errors.New("jwt: configure at least one key, key file or jwks")
	}
	for i, k := range j.Keys {
		if k == "" {
			return fmt.Errorf("jwt: key %d is empty", i+1)
		}
	}
	for i, f := range j.KeyFiles {
		if f == "" {
			return fmt.Errorf("jwt: key file %d: empty path", i+1)
		}
	}
	if j.JWKS != "" {
		u, err := url.Parse(j.JWKS)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("jwt: jwks %q is not an http(s) URL", j.JWKS)
		}
	}
	seen := make(map[TokenSource]bool, len(j.Token))
	for _, src := range j.Token {
		switch src.From {
		case "header":
			if src.Name != "" {
				return fmt.Errorf("jwt: token header takes no name (it is Authorization: Bearer), got %q", src.Name)
			}
		case "cookie", "query":
			if src.Name == "" {
				return fmt.Errorf("jwt: token %s needs a name", src.From)
			}
		default:
			return fmt.Errorf("jwt: token source %q is none of header, cookie, query", src.From)
		}
		if seen[src] {
			return fmt.Errorf("jwt: token source %s is listed twice", src)
		}
		seen[src] = true
	}
	claim := j.Claim
	if claim == "" {
		claim = u.claim
	}
	if slices.Contains(strings.Split(claim, "."), "") {
		return fmt.Errorf("jwt: claim %q is not a dot-separated path such as %s", j.Claim, u.claim)
	}
	return nil
}

func (j *JWT) provision(ctx caddy.Context, u use) error {
	if err := j.validate(u); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	j.static = j.static[:0]
	for i, raw := range j.Keys {
		secret, err := resolveSecret(repl, raw)
		if err != nil {
			return fmt.Errorf("jwt: key %d: %w", i+1, err)
		}
		algs, _ := algorithms([]byte(secret))
		j.static = append(j.static, verifyKey{key: []byte(secret), algs: algs})
	}
	for i, raw := range j.KeyFiles {
		path := repl.ReplaceKnown(raw, "")
		if path == "" {
			return fmt.Errorf("jwt: key file %d: %s expands to an empty path", i+1, raw)
		}
		keys, err := loadPEM(path)
		if err != nil {
			return fmt.Errorf("jwt: key file %s: %w", path, err)
		}
		j.static = append(j.static, keys...)
	}
	j.jwks = nil
	if j.JWKS != "" {
		j.jwks = newJWKS(ctx, repl.ReplaceKnown(j.JWKS, ""), ctx.Logger().Named("jwks"))
	}
	claim := j.Claim
	if claim == "" {
		claim = u.claim
	}
	j.issuer = repl.ReplaceKnown(j.Issuer, "")
	j.audience = repl.ReplaceKnown(j.Audience, "")
	j.claimPath = strings.Split(claim, ".")
	j.mercure = j.claimPath[0] == "mercure"
	j.sources = j.Token
	if len(j.sources) == 0 {
		j.sources = u.sources
	}
	return nil
}

// loadPEM reads the public keys of a PEM file.
func loadPEM(path string) ([]verifyKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []verifyKey
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var key any
		switch {
		case block.Type == "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case block.Type == "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case block.Type == "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				key = cert.PublicKey
			}
		case strings.Contains(block.Type, "PRIVATE KEY"):
			return nil, fmt.Errorf("PEM block %d is a private key; give the public key (openssl pkey -pubout)", n)
		default:
			return nil, fmt.Errorf("PEM block %d is a %s, not a PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE", n, block.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		algs, err := algorithms(key)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		keys = append(keys, verifyKey{key: key, algs: algs})
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key in the file")
	}
	return keys, nil
}

func (j *JWT) describeSources() string {
	s := make([]string, len(j.sources))
	for i, src := range j.sources {
		s[i] = src.String()
	}
	return strings.Join(s, ", ")
}

// extract returns the token of the first source that carries one.
func (j *JWT) extract(h http.Header, u *url.URL) (string, bool) {
	var query url.Values
	for _, src := range j.sources {
		var tok string
		switch src.From {
		case "header":
			scheme, rest, _ := strings.Cut(h.Get("Authorization"), " ")
			if strings.EqualFold(scheme, "Bearer") {
				tok = strings.TrimSpace(rest)
			}
		case "cookie":
			if c, err := (&http.Request{Header: h}).Cookie(src.Name); err == nil {
				tok = c.Value
			}
		case "query":
			if u != nil {
				if query == nil {
					query = u.Query()
				}
				tok = query.Get(src.Name)
			}
		}
		if tok != "" {
			return tok, true
		}
	}
	return "", false
}

// grants are the topics a verified token grants, and its expiry.
type grants struct {
	all      bool // Mercure's "*"
	literals []string
	patterns topic.Set
	expires  time.Time
}

func (g *grants) allows(name string) bool {
	return g.all || slices.Contains(g.literals, name) || g.patterns.Match(name)
}

var (
	errAlgMismatch = errors.New("algorithm not pinned to any key")
	errUnknownKey  = errors.New("unknown key id")
)

// verify checks a token at time now and reads the topics it grants.
func (j *JWT) verify(raw string, now time.Time) (*grants, *Rejection) {
	if len(raw) > maxTokenLength {
		return nil, j.reject(ReasonMalformed, "token is malformed: longer than 16KiB")
	}
	opts := []jwt.ParserOption{jwt.WithTimeFunc(func() time.Time { return now })}
	if j.issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.issuer))
	}
	if j.audience != "" {
		opts = append(opts, jwt.WithAudience(j.audience))
	}
	if j.RequireExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	claims := jwt.MapClaims{}
	tok, err := jwt.NewParser(opts...).ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		return j.keysFor(t, now)
	})
	if err != nil {
		return nil, j.rejectError(tok, claims, err)
	}
	g := &grants{}
	if exp, _ := claims.GetExpirationTime(); exp != nil {
		g.expires = exp.Time
	}
	list, rej := j.claimList(claims)
	if rej != nil {
		return nil, rej
	}
	for _, sel := range list {
		switch {
		case j.mercure && sel == "*":
			g.all = true
		case j.mercure:
			g.literals = append(g.literals, sel)
		default:
			p, err := topic.Compile(sel)
			if err != nil {
				return nil, j.reject(ReasonMalformed, "token is malformed: claim "+strings.Join(j.claimPath, ".")+" holds an invalid pattern")
			}
			g.patterns = append(g.patterns, p)
		}
	}
	return g, nil
}

// claimList reads the claim at the configured path: a list of strings, one
// string, or nothing (which grants nothing).
func (j *JWT) claimList(claims jwt.MapClaims) ([]string, *Rejection) {
	var cur any = map[string]any(claims)
	for _, seg := range j.claimPath {
		m, ok := cur.(map[string]any)
		if !ok {
			cur = nil
			break
		}
		cur = m[seg]
	}
	bad := j.reject(ReasonMalformed, "token is malformed: claim "+strings.Join(j.claimPath, ".")+" is not a list of strings")
	switch v := cur.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		list := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, bad
			}
			list = append(list, s)
		}
		return list, nil
	}
	return nil, bad
}

// keysFor returns the keys that may verify t: those pinned to its alg,
// restricted to its kid among the JWKS keys.
func (j *JWT) keysFor(t *jwt.Token, now time.Time) (any, error) {
	alg := t.Method.Alg()
	if t.Method == jwt.SigningMethodNone {
		return nil, errAlgMismatch
	}
	var set jwt.VerificationKeySet
	for _, k := range j.static {
		if k.allows(alg) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	var jwksKeys []verifyKey
	if j.jwks != nil {
		kid, _ := t.Header["kid"].(string)
		jwksKeys = j.jwks.lookup(kid, now)
		for _, k := range jwksKeys {
			if k.allows(alg) {
				set.Keys = append(set.Keys, k.key)
			}
		}
	}
	if len(set.Keys) == 0 {
		if j.jwks != nil && len(jwksKeys) == 0 {
			// The JWKS has no key of that kid (or none at all), even after
			// the refresh this lookup may have made.
			return nil, errUnknownKey
		}
		return nil, errAlgMismatch
	}
	return set, nil
}

func (j *JWT) reject(reason, msg string) *Rejection {
	return unauthorized("Bearer", reason, msg)
}

// rejectError turns a parse error into a Rejection. Signature failures come
// before claim checks in the library, so a forged token is never told that
// it is expired.
func (j *JWT) rejectError(tok *jwt.Token, claims jwt.MapClaims, err error) *Rejection {
	switch {
	case errors.Is(err, errAlgMismatch):
		alg := "its algorithm"
		if tok != nil && tok.Method != nil {
			alg = tok.Method.Alg() // a registered name, not the client's text
		}
		return j.reject(ReasonAlgMismatch, "token is signed with "+alg+", which no configured key is pinned to")
	case errors.Is(err, errUnknownKey):
		return j.reject(ReasonUnknownKey, "token key id (kid) is not known")
	case errors.Is(err, jwt.ErrTokenMalformed):
		return j.reject(ReasonMalformed, "token is malformed")
	case errors.Is(err, jwt.ErrTokenUnverifiable) && tok != nil && tok.Method == nil:
		if _, ok := tok.Header["alg"].(string); ok {
			return j.reject(ReasonAlgMismatch, "token is signed with an unknown algorithm")
		}
		return j.reject(ReasonMalformed, "token is malformed: no alg")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return j.reject(ReasonBadSignature, "token signature is invalid")
	case errors.Is(err, jwt.ErrTokenExpired):
		return j.reject(ReasonExpired, "token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return j.reject(ReasonNotYetValid, "token is not valid yet (nbf)")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return j.reject(ReasonBadIssuer, "token issuer (iss) is not the one expected")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return j.reject(ReasonBadAudience, "token audience (aud) does not include the one expected")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// Which one: the library says so only in its text.
		if iss, _ := claims.GetIssuer(); j.issuer != "" && iss == "" {
			return j.reject(ReasonBadIssuer, "token has no issuer (iss)")
		}
		if aud, _ := claims.GetAudience(); j.audience != "" && len(aud) == 0 {
			return j.reject(ReasonBadAudience, "token has no audience (aud)")
		}
		return j.reject(ReasonMissingExp, "token has no expiry (exp), and one is required")
	}
	// Claims of the wrong type (exp as a string, say) and anything else.
	return j.reject(ReasonMalformed, "token is malformed")
}
