package auth

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Each UnmarshalCaddyfile reads one block, starting at its name: the
// dispenser is positioned before the block's first token, as
// caddyfile.NewTestDispenser and Dispenser.NewFromNextSegment leave it.

// UnmarshalCaddyfile reads a subscribe block. Syntax:
//
//	subscribe {
//		jwt { … }                          # see JWT.UnmarshalCaddyfile
//		signed_url <secret>                # repeatable (rotation)
//		public     <pattern...>            # repeatable; topics anyone may read
//	}
func (s *Subscribe) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // subscribe
	if d.NextArg() {
		return d.Errf("subscribe: unexpected argument %q; options go in a block", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "jwt":
			if s.JWT != nil {
				return d.Errf("subscribe: jwt is given twice; put every key in one jwt block")
			}
			s.JWT = new(JWT)
			if err := s.JWT.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
		case "signed_url":
			var secret string
			if err := oneArg(d, "subscribe", &secret); err != nil {
				return err
			}
			s.SignedURL = append(s.SignedURL, secret)
		case "public":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("subscribe: public: missing pattern")
			}
			s.Public = append(s.Public, args...)
		default:
			return d.Errf("subscribe: unrecognized option %q", opt)
		}
	}
	return nil
}

// UnmarshalCaddyfile reads a jwt block, of subscribe or of publish. Syntax:
//
//	jwt {
//		key      <secret>                          # repeatable; HMAC: HS256/384/512
//		key      file <pem>                        # repeatable; RS*/PS*/ES*/EdDSA by key type
//		jwks     <url>                             # cached; an unknown kid refreshes it (at most every 10s)
//		token    header | cookie <name> | query <name>   # repeatable, tried in this order
//		claim    <dot.path>                        # default sse.subscribe (sse.publish in publish)
//		issuer   <iss>
//		audience <aud>
//		require_exp                                # refuse tokens without exp
//	}
//
// Without token lines, a subscriber's token is looked for in the
// Authorization header (Bearer), the cookie sse_token and the query
// parameter token, in that order; a publisher's in the Authorization header
// only. Given token lines replace that list.
func (j *JWT) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // jwt
	if d.NextArg() {
		return d.Errf("jwt: unexpected argument %q; options go in a block", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch opt := d.Val(); opt {
		case "key":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] != "file":
				j.Keys = append(j.Keys, args[0])
			case len(args) == 2 && args[0] == "file":
				j.KeyFiles = append(j.KeyFiles, args[1])
			default:
				return d.Errf("jwt: key takes <secret> or file <pem>")
			}
		case "jwks":
			if j.JWKS != "" {
				return d.Errf("jwt: jwks is given twice")
			}
			err = oneArg(d, "jwt", &j.JWKS)
		case "token":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "header":
				j.Token = append(j.Token, TokenSource{From: "header"})
			case len(args) == 2 && (args[0] == "cookie" || args[0] == "query"):
				j.Token = append(j.Token, TokenSource{From: args[0], Name: args[1]})
			default:
				return d.Errf("jwt: token takes header, cookie <name> or query <name>")
			}
		case "claim":
			err = oneArg(d, "jwt", &j.Claim)
		case "issuer":
			err = oneArg(d, "jwt", &j.Issuer)
		case "audience":
			err = oneArg(d, "jwt", &j.Audience)
		case "require_exp":
			if d.NextArg() {
				return d.Errf("jwt: require_exp takes no value")
			}
			j.RequireExp = true
		default:
			return d.Errf("jwt: unrecognized option %q", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// UnmarshalCaddyfile reads a cors block. Syntax:
//
//	cors {
//		origins <origin...> | *            # repeatable; scheme://host[:port]
//		credentials                        # allow cookies and withCredentials
//	}
func (c *CORS) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // cors
	if d.NextArg() {
		return d.Errf("cors: unexpected argument %q; options go in a block", d.Val())
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch opt := d.Val(); opt {
		case "origins":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("cors: origins: missing origin (or *)")
			}
			c.Origins = append(c.Origins, args...)
		case "credentials":
			if d.NextArg() {
				return d.Errf("cors: credentials takes no value")
			}
			c.Credentials = true
		default:
			return d.Errf("cors: unrecognized option %q", opt)
		}
	}
	return nil
}

// oneArg reads exactly one argument of the current option.
func oneArg(d *caddyfile.Dispenser, block string, dst *string) error {
	opt := d.Val()
	if !d.NextArg() {
		return d.Errf("%s: %s: missing value", block, opt)
	}
	*dst = d.Val()
	if d.NextArg() {
		return d.Errf("%s: %s: too many values", block, opt)
	}
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*Subscribe)(nil)
	_ caddyfile.Unmarshaler = (*JWT)(nil)
	_ caddyfile.Unmarshaler = (*PublishJWT)(nil)
	_ caddyfile.Unmarshaler = (*CORS)(nil)
	_ caddy.Provisioner     = (*Subscribe)(nil)
	_ caddy.Provisioner     = (*JWT)(nil)
	_ caddy.Provisioner     = (*PublishJWT)(nil)
	_ caddy.Provisioner     = (*CORS)(nil)
	_ caddy.Validator       = (*Subscribe)(nil)
	_ caddy.Validator       = (*JWT)(nil)
	_ caddy.Validator       = (*PublishJWT)(nil)
	_ caddy.Validator       = (*CORS)(nil)
)
