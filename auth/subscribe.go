package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ssegate/caddy-sse/topic"
)

// Reasons of rejections: the values of Rejection.Reason. The set is fixed,
// so that they can label a metric.
const (
	// No credential was sent.
	ReasonMissing = "missing"
	// The token's exp, or the signed URL's expires, has passed.
	ReasonExpired = "expired"
	// The token's nbf is still to come.
	ReasonNotYetValid = "not_yet_valid"
	// The signature does not verify with any configured key or secret.
	ReasonBadSignature = "bad_signature"
	// The token's iss is missing or not the configured issuer.
	ReasonBadIssuer = "bad_issuer"
	// The token's aud is missing or does not include the configured
	// audience.
	ReasonBadAudience = "bad_audience"
	// The token's alg is not one that a configured key is pinned to: "none",
	// HS256 where only public keys are configured (HS/RS confusion), an
	// unknown algorithm.
	ReasonAlgMismatch = "alg_mismatch"
	// The credential cannot be read: not a JWT, a claim of the wrong type, a
	// signed URL without expires or sig, or with values not in their format.
	ReasonMalformed = "malformed"
	// The token has no exp claim, and require_exp is set.
	ReasonMissingExp = "missing_exp"
	// The token names a key id (kid) that no configured key nor the JWKS has,
	// even after a refresh of the JWKS.
	ReasonUnknownKey = "unknown_key"
	// The credential is valid but does not grant a topic of the request (403).
	ReasonForbidden = "forbidden"
)

// Reasons returns every value Rejection.Reason can take, to initialise a
// metric's labels.
func Reasons() []string {
	return []string{ReasonMissing, ReasonExpired, ReasonNotYetValid, ReasonBadSignature,
		ReasonBadIssuer, ReasonBadAudience, ReasonAlgMismatch, ReasonMalformed,
		ReasonMissingExp, ReasonUnknownKey, ReasonForbidden}
}

// Schemes of grants: the values of Grant.Scheme.
const (
	SchemePublic    = "public"
	SchemeJWT       = "jwt"
	SchemeSignedURL = "signed_url"
)

// Grant is a successful authorization of a stream.
type Grant struct {
	// How the stream was admitted: SchemePublic, SchemeJWT or
	// SchemeSignedURL.
	Scheme string
	// When the credential expires; the stream must end then (with the
	// expired event), so that its reader comes back with a fresh one. The
	// zero time means never: public topics, tokens without exp.
	Expires time.Time
}

// Rejection says why a request is refused. It is also an error, whose text
// is Message.
type Rejection struct {
	// http.StatusUnauthorized (no credential, or an invalid one) or
	// http.StatusForbidden (a valid credential that does not grant a topic).
	Status int
	// One of the Reason constants; a bounded label for metrics and logs.
	Reason string
	// A human-readable explanation for the JSON error body. It names the
	// topic that is not granted for a 403, and never contains a credential.
	Message string
	// For a 403: the first topic of the request that is not granted.
	Topic string
	// The value of the WWW-Authenticate response header, to be set when not
	// empty (always for a 401).
	WWWAuthenticate string
}

func (r *Rejection) Error() string { return r.Message }

// Subscribe makes topics private: a subscription to a topic not matched by
// Public needs a token (JWT) or a signed URL that grants it. Without a
// subscribe configuration, every topic is public.
//
// When a request carries several credentials, one is judged: a signed URL
// when the query has `sig` or `expires`, else the token of the first token
// source that carries one (see the package documentation).
type Subscribe struct {
	// Subscribers may present a JWT whose claim lists the topic patterns
	// they may read.
	JWT *JWT `json:"jwt,omitempty"`

	// Secrets of signed URLs: a request carrying
	// `?expires=<unix seconds>&sig=<hex HMAC-SHA256(secret, topic + "\n" + expires)>`
	// may read that one topic until then. Several secrets may be listed so
	// that links signed with an old secret keep working during a rotation.
	// Placeholders such as `{env.SSE_URL_SECRET}` are expanded once, at
	// provisioning.
	SignedURL []string `json:"signed_url,omitempty"`

	// Patterns of topics anyone may read, without a credential. `*` matches
	// within one path segment, `**` across segments; e.g. `/news/**`.
	Public []string `json:"public,omitempty"`

	secrets [][]byte
	public  topic.Set
	// missing is the rejection for a request without credentials.
	missing Rejection
}

// Provision expands placeholders in secrets, loads keys, and compiles
// patterns. A secret that expands to nothing is an error naming the
// placeholder.
func (s *Subscribe) Provision(ctx caddy.Context) error {
	if err := s.Validate(); err != nil {
		return err
	}
	repl := caddy.NewReplacer()
	s.secrets = s.secrets[:0]
	for i, raw := range s.SignedURL {
		secret, err := resolveSecret(repl, raw)
		if err != nil {
			return fmt.Errorf("subscribe: signed_url secret %d: %w", i+1, err)
		}
		s.secrets = append(s.secrets, []byte(secret))
	}
	var err error
	if s.public, err = topic.CompileSet(s.Public); err != nil {
		return fmt.Errorf("subscribe: public: %w", err)
	}
	if s.JWT != nil {
		if err := s.JWT.provision(ctx, subscribeUse); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	}
	s.missing = Rejection{
		Status:  http.StatusUnauthorized,
		Reason:  ReasonMissing,
		Message: "authentication required: send " + s.expected(),
	}
	if s.JWT == nil && len(s.secrets) == 0 {
		// Only public patterns: no credential can open another topic.
		s.missing.Message = "topic is not public, and no credential is accepted here"
	}
	s.missing.WWWAuthenticate = s.challenge(s.JWT != nil, "", "")
	return nil
}

// expected describes the credentials a request may carry.
func (s *Subscribe) expected() string {
	var ways []string
	if s.JWT != nil {
		ways = append(ways, "a token ("+s.JWT.describeSources()+")")
	}
	if len(s.SignedURL) > 0 {
		ways = append(ways, "a signed URL (expires and sig)")
	}
	return strings.Join(ways, " or ")
}

// Validate checks the configuration's structure; Provision calls it.
func (s *Subscribe) Validate() error {
	if s.JWT == nil && len(s.SignedURL) == 0 && len(s.Public) == 0 {
		return errors.New("subscribe: configure jwt, signed_url or public; an empty subscribe block would refuse every topic")
	}
	for i, p := range s.Public {
		if _, err := topic.Compile(p); err != nil {
			return fmt.Errorf("subscribe: public pattern %d: %w", i+1, err)
		}
	}
	for i, secret := range s.SignedURL {
		if secret == "" {
			return fmt.Errorf("subscribe: signed_url secret %d is empty", i+1)
		}
	}
	if s.JWT != nil {
		if err := s.JWT.validate(subscribeUse); err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
	}
	return nil
}

// Authorize decides whether the request may read every one of topics (names
// already checked with topic.Validate) at time now. On success the Grant
// says when the stream must end; otherwise the Rejection says what to answer.
// A nil *Subscribe grants everything: without a subscribe block topics are
// public.
func (s *Subscribe) Authorize(r *http.Request, topics []string, now time.Time) (Grant, *Rejection) {
	if s == nil {
		return Grant{Scheme: SchemePublic}, nil
	}
	var need []string
	for _, t := range topics {
		if !s.public.Match(t) {
			need = append(need, t)
		}
	}
	if len(need) == 0 {
		return Grant{Scheme: SchemePublic}, nil
	}
	if len(s.secrets) > 0 {
		q := r.URL.Query()
		if q.Has("sig") || q.Has("expires") {
			return s.authorizeSignedURL(q, need, now)
		}
	}
	if s.JWT != nil {
		if raw, ok := s.JWT.extract(r.Header, r.URL); ok {
			g, rej := s.JWT.verify(raw, now)
			if rej != nil {
				return Grant{}, rej
			}
			for _, t := range need {
				if !g.allows(t) {
					return Grant{}, forbidden(t, "the token", s.challenge(true, "insufficient_scope", ""))
				}
			}
			return Grant{Scheme: SchemeJWT, Expires: g.expires}, nil
		}
	}
	rej := s.missing
	return Grant{}, &rej
}

// challenge builds a WWW-Authenticate value: Bearer when tokens are the
// credential at hand, else SignedURL (a scheme of our own, for clients that
// read it).
func (s *Subscribe) challenge(bearer bool, code, desc string) string {
	scheme := "SignedURL"
	if bearer {
		scheme = "Bearer"
	}
	return challenge(scheme, code, desc)
}

func challenge(scheme, code, desc string) string {
	v := scheme + ` realm="sse"`
	if code != "" {
		v += `, error="` + code + `"`
	}
	if desc != "" {
		// A quoted-string: no quotes nor backslashes inside.
		desc = strings.NewReplacer(`"`, "'", `\`, "/").Replace(desc)
		v += `, error_description="` + desc + `"`
	}
	return v
}

// forbidden is the 403 for topic t, not granted by what.
func forbidden(t, what, wwwAuth string) *Rejection {
	return &Rejection{
		Status:          http.StatusForbidden,
		Reason:          ReasonForbidden,
		Message:         fmt.Sprintf("topic %q is not granted by %s", t, what),
		Topic:           t,
		WWWAuthenticate: wwwAuth,
	}
}

// unauthorized is a 401 for reason with message msg, challenged by scheme.
func unauthorized(scheme, reason, msg string) *Rejection {
	return &Rejection{
		Status:          http.StatusUnauthorized,
		Reason:          reason,
		Message:         msg,
		WWWAuthenticate: challenge(scheme, "invalid_token", msg),
	}
}

// resolveSecret expands placeholders in a configured secret. The error names
// the configured value only when it holds a placeholder: a literal secret is
// never repeated.
func resolveSecret(repl *caddy.Replacer, raw string) (string, error) {
	v := repl.ReplaceKnown(raw, "")
	if v == "" {
		if strings.Contains(raw, "{") {
			return "", fmt.Errorf("%s expands to an empty string", raw)
		}
		return "", errors.New("empty")
	}
	return v, nil
}
