package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Preflight answers of CORS.
const (
	// CORSMethods are the methods a preflight allows.
	CORSMethods = "GET, POST, DELETE, OPTIONS"
	// CORSMaxAge is how long a browser may cache a preflight answer.
	CORSMaxAge = 10 * time.Minute
)

// corsHeaders are the request headers a preflight allows: tokens, content
// types, resumption, idempotency and the webhook signature schemes.
var corsHeaders = []string{
	"Authorization", "Content-Type", "Last-Event-ID", "Idempotency-Key",
	"X-Hub-Signature-256", "X-GitHub-Delivery", "X-GitHub-Event",
	"webhook-id", "webhook-timestamp", "webhook-signature",
}

// corsExposed are the response headers a page on another origin may read.
const corsExposed = "WWW-Authenticate, Retry-After"

// CORS lets pages on other origins subscribe and publish. Without it,
// responses carry no CORS headers and browsers keep other origins out.
//
// CORS is no access control of its own: a request from an origin not
// listed is still served, only without the headers that let the page read
// the answer. Authorization decides who may read.
type CORS struct {
	// Origins allowed to read responses, each `scheme://host[:port]`, or `*`
	// for every origin. With credentials, the matching origin is echoed,
	// never `*`; `*` with credentials lets any site on the web read what the
	// user's cookies grant, which is rarely what you want. The origin
	// `null` (sandboxed frames, files) is allowed only when listed.
	Origins []string `json:"origins,omitempty"`

	// Allow credentials (cookies, `new EventSource(url, {withCredentials:
	// true})`, `fetch(…, {credentials: "include"})`):
	// `Access-Control-Allow-Credentials: true`. Default: false.
	Credentials bool `json:"credentials,omitempty"`

	any     bool
	origins []string // lowercase
	headers string
}

// Provision prepares the origin list; it calls Validate.
func (c *CORS) Provision(caddy.Context) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.any, c.origins = false, c.origins[:0]
	for _, o := range c.Origins {
		if o == "*" {
			c.any = true
			continue
		}
		c.origins = append(c.origins, strings.ToLower(o))
	}
	c.headers = strings.Join(corsHeaders, ", ")
	return nil
}

// AllowHeader adds request headers that preflights allow, beyond the
// defaults: the custom signature header of an hmac_sha256 secret, say.
// Call it after Provision.
func (c *CORS) AllowHeader(names ...string) {
	for _, n := range names {
		if !slices.ContainsFunc(strings.Split(c.headers, ", "), func(h string) bool { return strings.EqualFold(h, n) }) {
			c.headers += ", " + n
		}
	}
}

// Validate checks that every origin is `*` or a bare origin.
func (c *CORS) Validate() error {
	if len(c.Origins) == 0 {
		return errors.New("cors: origins: list the origins allowed, or *")
	}
	for _, o := range c.Origins {
		if o == "*" || o == "null" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(o, "/") {
			return fmt.Errorf("cors: origin %q is not of the form scheme://host[:port] (no path, no trailing slash) nor *", o)
		}
	}
	return nil
}

// allowed returns the value of Access-Control-Allow-Origin for origin, or ""
// when it is not allowed.
func (c *CORS) allowed(origin string) string {
	if origin == "" {
		return ""
	}
	if slices.Contains(c.origins, strings.ToLower(origin)) {
		return origin
	}
	if c.any && origin != "null" {
		if c.Credentials {
			return origin
		}
		return "*"
	}
	return ""
}

// Apply sets the CORS headers of the response to r, and answers a
// preflight. Call it first, before any authorization, so that refusals
// carry the headers too (a page must be able to read why its request
// failed). It reports whether the request was a preflight (OPTIONS with
// Origin and Access-Control-Request-Method) that it answered entirely, with
// 204: then nothing more must be written. A preflight from an origin not
// allowed is answered too, without allowing anything, so the browser stops
// there.
func (c *CORS) Apply(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	addVary(h, "Origin")
	origin := r.Header.Get("Origin")
	allow := c.allowed(origin)
	if allow != "" {
		h.Set("Access-Control-Allow-Origin", allow)
		if c.Credentials {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
	}
	preflight := r.Method == http.MethodOptions && origin != "" && r.Header.Get("Access-Control-Request-Method") != ""
	if !preflight {
		if allow != "" {
			h.Set("Access-Control-Expose-Headers", corsExposed)
		}
		return false
	}
	if allow != "" {
		h.Set("Access-Control-Allow-Methods", CORSMethods)
		h.Set("Access-Control-Allow-Headers", c.headers)
		h.Set("Access-Control-Max-Age", strconv.Itoa(int(CORSMaxAge/time.Second)))
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// addVary adds name to the Vary header unless it is there already.
func addVary(h http.Header, name string) {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), name) {
				return
			}
		}
	}
	h.Add("Vary", name)
}
