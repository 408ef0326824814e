package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/url"
	"strconv"
	"time"
)

// SignURL signs a link to topic valid until expires, for one of the secrets
// of signed_url. It returns the values of the `expires` and `sig` query
// parameters to add to the topic's URL:
//
//	expires = decimal unix seconds
//	sig     = lowercase hex of HMAC-SHA256(secret, topic + "\n" + expires)
//
// The topic is the name the handler resolves for the request (by default
// the URL path), not the URL.
func SignURL(secret, topic string, expires time.Time) (exp, sig string) {
	exp = strconv.FormatInt(expires.Unix(), 10)
	return exp, hex.EncodeToString(signature([]byte(secret), topic, exp))
}

func signature(secret []byte, topic, expires string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(topic))
	mac.Write([]byte{'\n'})
	mac.Write([]byte(expires))
	return mac.Sum(nil)
}

// authorizeSignedURL judges a request whose query carries expires or sig. A
// signature grants one topic; with several topics in need of a grant, the
// others are refused with a 403.
func (s *Subscribe) authorizeSignedURL(q url.Values, need []string, now time.Time) (Grant, *Rejection) {
	const scheme = "SignedURL"
	exp, sigHex := q.Get("expires"), q.Get("sig")
	if exp == "" || sigHex == "" {
		return Grant{}, unauthorized(scheme, ReasonMalformed, "signed URL needs both expires and sig")
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || secs < 0 || exp[0] == '+' {
		return Grant{}, unauthorized(scheme, ReasonMalformed, "signed URL expires is not unix seconds")
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != sha256.Size {
		return Grant{}, unauthorized(scheme, ReasonMalformed, "signed URL sig is not a hex HMAC-SHA256")
	}
	granted := -1
	for i, t := range need {
		for _, secret := range s.secrets {
			// hmac.Equal compares in constant time.
			if hmac.Equal(sig, signature(secret, t, exp)) {
				granted = i
				break
			}
		}
		if granted >= 0 {
			break
		}
	}
	if granted < 0 {
		return Grant{}, unauthorized(scheme, ReasonBadSignature, "signed URL signature is invalid for this topic")
	}
	expires := time.Unix(secs, 0)
	if !now.Before(expires) {
		return Grant{}, unauthorized(scheme, ReasonExpired, "signed URL expired")
	}
	for i, t := range need {
		if i != granted {
			return Grant{}, forbidden(t, "the signed URL, which grants one topic", "")
		}
	}
	return Grant{Scheme: SchemeSignedURL, Expires: expires}, nil
}
