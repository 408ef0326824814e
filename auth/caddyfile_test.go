package auth

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// TestCaddyfile parses each block and compares its JSON with the expected
// configuration.
func TestCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		into  caddyfile.Unmarshaler
		json  string
	}{
		{"subscribe, every option", `subscribe {
			jwt {
				key      {env.SSE_JWT_SECRET}
				key      previous-secret
				key      file /etc/sse/rs256.pem
				jwks     https://id.example/.well-known/jwks.json
				token    cookie session
				token    header
				token    query access_token
				claim    mercure.subscribe
				issuer   https://id.example
				audience sse
				require_exp
			}
			signed_url {env.SSE_URL_SECRET}
			signed_url old-url-secret
			public     /news/** /status
			public     /about
		}`, new(Subscribe), `{"jwt":{"keys":["{env.SSE_JWT_SECRET}","previous-secret"],"key_files":["/etc/sse/rs256.pem"],` +
			`"jwks":"https://id.example/.well-known/jwks.json","token":[{"from":"cookie","name":"session"},{"from":"header"},` +
			`{"from":"query","name":"access_token"}],"claim":"mercure.subscribe","issuer":"https://id.example","audience":"sse",` +
			`"require_exp":true},"signed_url":["{env.SSE_URL_SECRET}","old-url-secret"],"public":["/news/**","/status","/about"]}`},
		{"subscribe, signed URLs only", `subscribe {
			signed_url s3cret
		}`, new(Subscribe), `{"signed_url":["s3cret"]}`},
		{"subscribe, empty jwt block", `subscribe {
			jwt {
			}
		}`, new(Subscribe), `{"jwt":{}}`},
		{"publish jwt", `jwt {
			key   {env.SSE_PUBLISH_SECRET}
			claim sse.publish
		}`, new(PublishJWT), `{"keys":["{env.SSE_PUBLISH_SECRET}"],"claim":"sse.publish"}`},
		{"cors", `cors {
			origins https://app.example http://localhost:3000
			origins https://admin.example
			credentials
		}`, new(CORS), `{"origins":["https://app.example","http://localhost:3000","https://admin.example"],"credentials":true}`},
		{"cors *", `cors {
			origins *
		}`, new(CORS), `{"origins":["*"]}`},
	} {
		d := caddyfile.NewTestDispenser(tc.input)
		if err := tc.into.UnmarshalCaddyfile(d); err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		got, err := json.Marshal(tc.into)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.json {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, tc.json)
		}
	}
}

// TestCaddyfileNested: the subscribe block inside an enclosing block leaves
// the dispenser after its closing brace, ready for the next option.
func TestCaddyfileNested(t *testing.T) {
	d := caddyfile.NewTestDispenser(`sse {
		subscribe {
			jwt {
				key k
			}
			public /p
		}
		cors {
			origins *
		}
		retry 1s
	}`)
	d.Next()
	var (
		s    Subscribe
		c    CORS
		seen []string
	)
	for d.NextBlock(0) {
		seen = append(seen, d.Val())
		switch d.Val() {
		case "subscribe":
			if err := s.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				t.Fatal(err)
			}
		case "cors":
			if err := c.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				t.Fatal(err)
			}
		default:
			d.RemainingArgs()
		}
	}
	if strings.Join(seen, " ") != "subscribe cors retry" {
		t.Errorf("options seen: %q", seen)
	}
	if s.JWT == nil || len(s.JWT.Keys) != 1 || len(s.Public) != 1 || len(c.Origins) != 1 {
		t.Errorf("parsed %+v %+v", s, c)
	}
}

func TestCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input string
		into  caddyfile.Unmarshaler
		want  string
	}{
		{"unknown subscribe option", "subscribe {\n\tprivate /x\n}", new(Subscribe), `subscribe: unrecognized option "private", at Testfile:2`},
		{"subscribe argument", "subscribe /x {\n}", new(Subscribe), `unexpected argument "/x"`},
		{"signed_url without secret", "subscribe {\n\tsigned_url\n}", new(Subscribe), "subscribe: signed_url: missing value, at Testfile:2"},
		{"signed_url with two", "subscribe {\n\tsigned_url a b\n}", new(Subscribe), "signed_url: too many values"},
		{"public without pattern", "subscribe {\n\n\tpublic\n}", new(Subscribe), "public: missing pattern, at Testfile:3"},
		{"jwt twice", "subscribe {\n\tjwt {\n\t\tkey a\n\t}\n\tjwt {\n\t}\n}", new(Subscribe), "jwt is given twice; put every key in one jwt block, at Testfile:5"},
		{"unknown jwt option", "subscribe {\n\tjwt {\n\t\tsecret x\n\t}\n}", new(Subscribe), `jwt: unrecognized option "secret", at Testfile:3`},
		{"key without value", "jwt {\n\tkey\n}", new(JWT), "key takes <secret> or file <pem>, at Testfile:2"},
		{"key file without path", "jwt {\n\tkey file\n}", new(JWT), "key takes <secret> or file <pem>"},
		{"key with three values", "jwt {\n\tkey a b c\n}", new(JWT), "key takes <secret> or file <pem>"},
		{"token header with a name", "jwt {\n\ttoken header X-Token\n}", new(JWT), "token takes header, cookie <name> or query <name>, at Testfile:2"},
		{"token cookie without name", "jwt {\n\ttoken cookie\n}", new(JWT), "token takes header"},
		{"token body", "jwt {\n\ttoken body x\n}", new(JWT), "token takes header"},
		{"jwks twice", "jwt {\n\tjwks https://a\n\tjwks https://b\n}", new(JWT), "jwks is given twice, at Testfile:3"},
		{"claim without value", "jwt {\n\tclaim\n}", new(JWT), "jwt: claim: missing value"},
		{"require_exp with a value", "jwt {\n\trequire_exp true\n}", new(JWT), "require_exp takes no value"},
		{"unknown cors option", "cors {\n\tmethods GET\n}", new(CORS), `cors: unrecognized option "methods", at Testfile:2`},
		{"origins without value", "cors {\n\torigins\n}", new(CORS), "origins: missing origin"},
		{"credentials with a value", "cors {\n\tcredentials yes\n}", new(CORS), "credentials takes no value"},
	} {
		err := tc.into.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one with %q", tc.name, err, tc.want)
		}
	}
}

// TestCaddyfileProvisions: what the Caddyfile gives provisions, and works.
func TestCaddyfileProvisions(t *testing.T) {
	t.Setenv("SSE_TEST_URL_SECRET", "a signing secret from the env....")
	var s Subscribe
	err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`subscribe {
		jwt {
			key   0123456789abcdef0123456789abcdef
			token query t
		}
		signed_url {env.SSE_TEST_URL_SECRET}
		public /news/**
	}`))
	if err != nil {
		t.Fatal(err)
	}
	provisioned(t, &s)
	exp, sig := SignURL("a signing secret from the env....", "/x", t0.Add(time.Minute))
	for _, r := range []string{"/news/a", "/x?expires=" + exp + "&sig=" + sig} {
		if _, rej := s.Authorize(request(r), []string{strings.SplitN(r, "?", 2)[0]}, t0); rej != nil {
			t.Errorf("%s: %v", r, rej)
		}
	}
}
