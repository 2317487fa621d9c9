// Package apiurl points clients that believe they talk to https://discord.com
// at another base URL: a REST proxy, or a fake Discord on 127.0.0.1.
//
// discordgo computes its endpoint strings once, at package initialisation,
// from https://discord.com/. Rather than reassign those package variables,
// a session gets an http.Client whose transport rewrites each request.
package apiurl

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// DiscordHost is the host discordgo's REST endpoints are built on.
const DiscordHost = "discord.com"

// Parse checks that raw is an absolute http(s) URL with a host and no query
// or fragment, and returns it. The error names what is wrong.
func Parse(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse api url %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("api url %q: scheme must be http or https", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("api url %q: no host", raw)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("api url %q: port %q is not between 1 and 65535", raw, p)
		}
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("api url %q: must not carry a query or fragment", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// IsDiscord reports whether u is Discord itself, where no rewriting is needed.
func IsDiscord(u *url.URL) bool {
	return u.Scheme == "https" && u.Host == DiscordHost && u.Path == ""
}

// Transport returns a RoundTripper that sends every request addressed to
// https://discord.com to base instead (scheme, host and a path prefix), and
// every other request unchanged. next is used for the actual round trip;
// nil means http.DefaultTransport.
func Transport(base *url.URL, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &rewriter{base: *base, next: next}
}

type rewriter struct {
	base url.URL
	next http.RoundTripper
}

func (t *rewriter) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != DiscordHost {
		return t.next.RoundTrip(req)
	}
	// A RoundTripper must not modify the request it was given.
	r := req.Clone(req.Context())
	r.URL.Scheme = t.base.Scheme
	r.URL.Host = t.base.Host
	r.URL.Path = t.base.Path + req.URL.Path
	if req.URL.RawPath != "" {
		r.URL.RawPath = t.base.Path + req.URL.RawPath
	}
	r.Host = t.base.Host
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		return nil, &dialError{url: r.URL, err: err}
	}
	return resp, nil
}

// dialError is a failed round trip to the rewritten URL.
type dialError struct {
	url *url.URL
	err error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// Dialled returns err naming the URL that was really asked: net/http's
// *url.Error names the request as discordgo built it (https://discord.com/...)
// even when Transport sent it elsewhere, which misleads whoever reads it.
// Other errors are returned as they are.
func Dialled(err error) error {
	var ue *url.Error
	var de *dialError
	if !errors.As(err, &ue) || !errors.As(ue.Err, &de) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: de.url.Redacted(), Err: de.err}
}
