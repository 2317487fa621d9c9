package apiurl

import (
	"net/http"
	"net/http/httptest"
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
