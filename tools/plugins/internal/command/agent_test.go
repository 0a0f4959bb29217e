package command

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"hft-deploy.local/plugins/internal/props"
)

// startAgent serves an in-memory ssh-agent holding the test server's client
// key on a unix socket, and returns the socket path.
func startAgent(t *testing.T, s *testServer) string {
	t.Helper()
	key, err := ssh.ParseRawPrivateKey([]byte(s.clientK))
	if err != nil {
		t.Fatal(err)
	}
	kr := agent.NewKeyring()
	if err := kr.Add(agent.AddedKey{PrivateKey: key}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _ = agent.ServeAgent(kr, c) }()
		}
	}()
	return path
}

// TestAgentSocketAsUpstream: upstream takes agentSocketPath when present, else
// $SSH_AUTH_SOCK when non-empty, and dials that socket on every connection,
// whatever other auth is set; a failed dial fails the command.
func TestAgentSocketAsUpstream(t *testing.T) {
	s := startServer(t) // sets SSH_AUTH_SOCK="" for the test
	live := startAgent(t, s)
	gone := filepath.Join(t.TempDir(), "gone.sock")
	noKey := func(extra resource.PropertyMap) resource.PropertyValue {
		c := s.conn(extra)
		delete(c.SecretValue().Element.ObjectValue(), "privateKey")
		return c
	}
	cases := []struct {
		name    string
		env     string
		conn    resource.PropertyValue
		wantErr string // "" = success
	}{
		{"stale SSH_AUTH_SOCK fails although privateKey is valid", gone, s.conn(nil),
			"dial unix " + gone + ": connect: no such file or directory"},
		{"agentSocketPath overrides a stale SSH_AUTH_SOCK", gone,
			noKey(resource.PropertyMap{"agentSocketPath": str(live)}), ""},
		{"live SSH_AUTH_SOCK authenticates alone", live, noKey(nil), ""},
		{"agentSocketPath to a gone socket fails", "",
			s.conn(resource.PropertyMap{"agentSocketPath": str(gone)}), "no such file or directory"},
		{`agentSocketPath "" is dialled, not the default`, live,
			s.conn(resource.PropertyMap{"agentSocketPath": str("")}), "dial unix"},
		{"no agent at all: privateKey works", "", s.conn(nil), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("SSH_AUTH_SOCK", c.env)
			out, err := create(t, remoteURN, resource.PropertyMap{"connection": c.conn, "create": str("echo ok")})
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("want success, got %v", err)
			case c.wantErr == "" && props.Plain(out["stdout"]).StringValue() != "ok":
				t.Fatalf("stdout %v", out["stdout"])
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("want error containing %q, got %v", c.wantErr, err)
			}
		})
	}
}
