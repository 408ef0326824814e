package auth

import (
	"net/http"
	"net/url"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/ssegate/caddy-sse/webhook"
)

// PublishJWT authenticates publishers (POST) and topic closers (DELETE) with
// a JWT, a scheme beside bearer, hmac_sha256 and standard_webhooks. Its
// options are those of JWT; the defaults differ: the claim is
// `sse.publish` (`mercure.publish` accepts Mercure publisher tokens), and
// the token is read from the Authorization header only, since a cookie
// would let any page that the user visits publish as the user.
type PublishJWT struct {
	JWT
}

// Provision prepares the verifier with the publish defaults.
func (p *PublishJWT) Provision(ctx caddy.Context) error { return p.provision(ctx, publishUse) }

// Validate checks the configuration.
func (p *PublishJWT) Validate() error { return p.validate(publishUse) }

// Scheme names the scheme as the configuration does: jwt.
func (*PublishJWT) Scheme() string { return SchemeJWT }

// Check verifies the token of a request that publishes to (or closes)
// topic. A nil result admits it; a Rejection is a 401 (missing or invalid
// token) or a 403 (a valid token whose claim does not grant topic).
func (p *PublishJWT) Check(r *http.Request, topic string, now time.Time) *Rejection {
	return p.check(r.Header, r.URL, topic, now)
}

func (p *PublishJWT) check(h http.Header, u *url.URL, topic string, now time.Time) *Rejection {
	raw, ok := p.extract(h, u)
	if !ok {
		return &Rejection{
			Status:          http.StatusUnauthorized,
			Reason:          ReasonMissing,
			Message:         "authentication required: send a token (" + p.describeSources() + ")",
			WWWAuthenticate: challenge("Bearer", "", ""),
		}
	}
	g, rej := p.verify(raw, now)
	if rej != nil {
		return rej
	}
	if !g.allows(topic) {
		return forbidden(topic, "the token", challenge("Bearer", "insufficient_scope", ""))
	}
	return nil
}

// Verifier returns a webhook.Verifier checking the token of r for topic, so
// that the publish path can put it in its webhook.Any beside the other
// schemes: one passing admits the request. It reads the Authorization
// header and cookies from the header given to Verify, and query
// parameters from r. Through webhook.Any every failure, a topic not granted
// included, is one more reason of a 401; call Check instead to answer 403.
func (p *PublishJWT) Verifier(r *http.Request, topic string) webhook.Verifier {
	return &topicVerifier{p: p, url: r.URL, topic: topic}
}

type topicVerifier struct {
	p     *PublishJWT
	url   *url.URL
	topic string
}

func (v *topicVerifier) Scheme() string { return SchemeJWT }

func (v *topicVerifier) Verify(h http.Header, _ []byte, now time.Time) error {
	if rej := v.p.check(h, v.url, v.topic, now); rej != nil {
		return &webhook.Error{Scheme: SchemeJWT, Msg: rej.Message}
	}
	return nil
}
