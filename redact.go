// Credentials in configured URLs (an upstream's, Redis's) never reach a
// log line, a metric label or an error message.

package caddysse

import (
	"net/url"
	"strings"
)

// redactURL is the URL as logged: no password.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// redactedError is err's message with the user information of rawURL
// (user and password) replaced: parsers quote a URL they cannot parse
// whole in their error.
func redactedError(err error, rawURL string) string {
	msg := err.Error()
	if i := strings.Index(rawURL, "://"); i >= 0 {
		if at := strings.LastIndexByte(rawURL, '@'); at > i {
			msg = strings.ReplaceAll(msg, rawURL[i+3:at], "xxxxx")
		}
	}
	return msg
}
