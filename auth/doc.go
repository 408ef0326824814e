// Package auth decides who may read and publish which topics: JWTs (with
// HMAC secrets, PEM public keys or a JWKS URL), signed URLs, public
// patterns, and the CORS headers that let pages on other origins use them.
//
// # Which credential is used
//
// A subscribe request may carry several credentials: an Authorization
// header, a cookie, a token in the query, a signed URL. Exactly one of them
// is judged, chosen in this order:
//
//  1. Topics matched by `public` need none: when every topic of the stream
//     is public, credentials are not even looked at (a stale cookie cannot
//     break a public stream), and the stream has no expiry.
//  2. A signed URL, when `signed_url` is configured and the query carries
//     `sig` or `expires`: a link is the most specific credential there is,
//     made for this very request, so it wins over a cookie the browser
//     sends to every request. Tokens are then not looked at.
//  3. Otherwise the first token source, in `token` order, that carries a
//     token (an `Authorization: Bearer` header, the cookie, the query
//     parameter); later sources are not looked at, even when that token
//     fails. A request whose Authorization header is of another scheme
//     (Basic, say) carries no token there.
//  4. No credential at all: 401, reason "missing".
//
// Every topic of the stream that is not public must be granted by that one
// credential, or the answer is 403 naming the first topic that is not.
//
// # Failures
//
// A missing or invalid credential is a 401 with a WWW-Authenticate
// challenge; a valid credential that does not grant a topic is a 403. Each
// Rejection carries a Reason from a small fixed set (see Reasons), meant as
// a metric label and for debug logs. Nothing in a Rejection, nor any error
// of this package, contains a token or a secret.
package auth
