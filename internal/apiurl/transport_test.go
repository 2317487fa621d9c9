package apiurl

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    string
		wantErr bool
	}{
		{raw: "https://discord.com", want: "https://discord.com"},
		{raw: "http://127.0.0.1:8080/", want: "http://127.0.0.1:8080"},
		{raw: "https://proxy.example/discord/", want: "https://proxy.example/discord"},
		{raw: "ftp://x", wantErr: true},
		{raw: "127.0.0.1:80", wantErr: true},
		{raw: "http://", wantErr: true},
		{raw: "http://x/?a=b", wantErr: true},
		{raw: "http://x/#frag", wantErr: true},
		{raw: "http://[::1", wantErr: true},
		{raw: "http://127.0.0.1:99999", wantErr: true},
		{raw: "http://127.0.0.1:0", wantErr: true},
		{raw: "http://127.0.0.1:-1", wantErr: true},
		{raw: "http://[::1]:443", want: "http://[::1]:443"},
	} {
		u, err := Parse(tc.raw)
		if tc.wantErr {
			if err == nil {
				t.Errorf("Parse(%q) = %v, want an error", tc.raw, u)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %s", tc.raw, u, err, tc.want)
		}
	}
}

// A failed request names the URL that was dialled, not discord.com.
func TestDialledNamesTheRealURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	base, _ := Parse("http://" + addr + "/prefix")
	c := &http.Client{Transport: Transport(base, nil)}
	_, err = c.Get("https://discord.com/api/v9/gateway/bot")
	if err == nil {
		t.Fatal("a request to a closed port succeeded")
	}
	got := Dialled(err).Error()
	if strings.Contains(got, "discord.com") || !strings.Contains(got, "http://"+addr+"/prefix/api/v9/gateway/bot") {
		t.Errorf("error %q does not name the dialled URL", got)
	}
	var ue *url.Error
	if !errors.As(Dialled(err), &ue) {
		t.Errorf("Dialled lost the *url.Error")
	}
	plain := errors.New("other")
	if Dialled(plain) != plain {
		t.Errorf("Dialled changed an error that is not a round trip's")
	}
}

func TestTransportRewritesDiscordOnly(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Host+" "+r.URL.RequestURI())
	}))
	defer srv.Close()
	base, err := Parse(srv.URL + "/prefix")
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: Transport(base, srv.Client().Transport)}
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://discord.com/api/v9/gateway?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := base.Host + " /prefix/api/v9/gateway?x=1"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("server saw %q, want [%q]", got, want)
	}
}
