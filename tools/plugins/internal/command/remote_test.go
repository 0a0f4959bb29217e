package command

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"

	"hft-deploy.local/plugins/internal/props"
)

const remoteURN = "urn:pulumi:dev::hft::command:remote:Command::setup"

// retryDelaySchedule is the real schedule, kept before init shortens it.
var retryDelaySchedule = retryDelay

func init() { retryDelay = func(int) time.Duration { return 10 * time.Millisecond } }

// conn builds a connection input for the test server, as the Python SDK sends
// it (a secret object).
func (s *testServer) conn(extra resource.PropertyMap) resource.PropertyValue {
	host, port, _ := net.SplitHostPort(s.addr)
	m := resource.PropertyMap{
		"host": resource.NewStringProperty(host), "user": resource.NewStringProperty("deploy"),
		"privateKey": resource.NewStringProperty(s.clientK), "dialErrorLimit": resource.NewNumberProperty(2),
	}
	n, _ := strconv.Atoi(port)
	m["port"] = resource.NewNumberProperty(float64(n))
	for k, v := range extra {
		m[k] = v
	}
	return resource.MakeSecret(resource.NewObjectProperty(m))
}

func create(t *testing.T, urn string, in resource.PropertyMap) (resource.PropertyMap, error) {
	t.Helper()
	st, err := props.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := New(nil).Create(ctx, &pulumirpc.CreateRequest{Urn: urn, Properties: st})
	if err != nil {
		return nil, err
	}
	out, err := props.Unmarshal(resp.Properties)
	if err != nil {
		t.Fatal(err)
	}
	return out, nil
}

func TestRemoteRunsCommandWithStdinAndEnv(t *testing.T) {
	s := startServer(t)
	out, err := create(t, remoteURN, resource.PropertyMap{
		"connection":  s.conn(nil),
		"create":      resource.NewStringProperty(`read x; echo "got:$x"; echo "env:$FOO"; echo warn >&2`),
		"stdin":       resource.NewStringProperty("hello\n"),
		"environment": resource.NewObjectProperty(resource.PropertyMap{"FOO": resource.NewStringProperty("bar")}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := props.Str(out, "stdout"); got != "got:hello\nenv:bar" {
		t.Fatalf("stdout = %q", got)
	}
	if got, _ := props.Str(out, "stderr"); got != "warn" {
		t.Fatalf("stderr = %q", got)
	}
	if out["stdout"].IsSecret() || !out["connection"].IsSecret() {
		t.Fatal("stdout must stay plain, connection secret")
	}
}

func TestRemotePasswordAuthAndSecretStdin(t *testing.T) {
	s := startServer(t)
	c := s.conn(resource.PropertyMap{"password": resource.NewStringProperty("s3cret")})
	delete(c.SecretValue().Element.ObjectValue(), "privateKey")
	out, err := create(t, remoteURN, resource.PropertyMap{
		"connection": c, "create": resource.NewStringProperty("cat"),
		"stdin": resource.MakeSecret(resource.NewStringProperty("token")),
	})
	if err != nil {
		t.Fatal(err)
	}
	// As upstream: stdout stays plain although stdin is secret (programs use
	// additional_secret_outputs); stdin itself stays secret.
	if out["stdout"].IsSecret() || props.Plain(out["stdout"]).StringValue() != "token" || !out["stdin"].IsSecret() {
		t.Fatalf("stdout must be the plain stdin text and stdin stay secret, got %v / %v", out["stdout"], out["stdin"])
	}
}

// TestRemoteExitError: upstream's error is the SSH exit error, the whole
// command Go-quoted and all of stdout+stderr, whatever `logging` says.
func TestRemoteExitError(t *testing.T) {
	s := startServer(t)
	cmd := "echo out; echo boom >&2; exit 3"
	in := resource.PropertyMap{"connection": s.conn(nil), "create": resource.NewStringProperty(cmd)}
	for _, l := range []string{LogStdoutAndStderr, LogNone} {
		in["logging"] = resource.NewStringProperty(l)
		_, err := create(t, remoteURN, in)
		prefix := "Process exited with status 3: running \"echo out; echo boom >&2; exit 3\":\n"
		if err == nil || !strings.HasPrefix(err.Error(), prefix) ||
			!strings.Contains(err.Error(), "out\n") || !strings.Contains(err.Error(), "boom\n") {
			t.Fatalf("logging %s: want %q + all output, got %v", l, prefix, err)
		}
	}
}

func TestRemoteHostKeyPinning(t *testing.T) {
	s := startServer(t)
	right := string(ssh.MarshalAuthorizedKey(s.hostKey))
	in := resource.PropertyMap{"create": resource.NewStringProperty("echo ok"),
		"connection": s.conn(resource.PropertyMap{"hostKey": resource.NewStringProperty(right)})}
	if out, err := create(t, remoteURN, in); err != nil || props.Plain(out["stdout"]).StringValue() != "ok" {
		t.Fatalf("matching host key: %v", err)
	}
	other, _ := newSigner(t)
	wrong := string(ssh.MarshalAuthorizedKey(other.PublicKey()))
	in["connection"] = s.conn(resource.PropertyMap{"hostKey": resource.NewStringProperty(wrong)})
	before := s.conns.Load()
	_, err := create(t, remoteURN, in)
	if err == nil || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("wrong host key must be refused, got %v", err)
	}
	// Upstream retries every dial failure, a mismatch too: dialErrorLimit (2) + 1 attempts.
	if n := s.conns.Load() - before; n != 3 {
		t.Fatalf("host key mismatch: want 3 attempts as upstream, saw %d connections", n)
	}
	// A present but empty hostKey is no "no pinning": ssh.ParseAuthorizedKey fails it.
	in["connection"] = s.conn(resource.PropertyMap{"hostKey": resource.NewStringProperty("")})
	before = s.conns.Load()
	if _, err := create(t, remoteURN, in); err == nil || !strings.Contains(err.Error(), "ssh: no key found") {
		t.Fatalf(`hostKey "" must fail with "ssh: no key found", got %v`, err)
	}
	if n := s.conns.Load() - before; n != 0 {
		t.Fatalf(`hostKey "" must fail before dialling, saw %d connections`, n)
	}
}

// TestRemoteHostKeyAlgorithm: as upstream, only the pinned key's type is
// offered as host key algorithm (a pinned ssh-rsa key offers ssh-rsa alone).
func TestRemoteHostKeyAlgorithm(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	edPub, _ := ssh.NewPublicKey(priv.Public())
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := ssh.NewPublicKey(&rk.PublicKey)
	for line, want := range map[string]string{
		string(ssh.MarshalAuthorizedKey(edPub)):  ssh.KeyAlgoED25519,
		string(ssh.MarshalAuthorizedKey(rsaPub)): ssh.KeyAlgoRSA,
	} {
		cfg := &ssh.ClientConfig{}
		if err := (Conn{HostKey: &line}).hostKeyCheck(cfg); err != nil {
			t.Fatal(err)
		}
		if len(cfg.HostKeyAlgorithms) != 1 || cfg.HostKeyAlgorithms[0] != want {
			t.Errorf("%s: offered %v, want [%s]", want, cfg.HostKeyAlgorithms, want)
		}
	}
}

func TestRemoteDialRetryLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close() // not an SSH server: every attempt fails
			accepted <- struct{}{}
		}
	}()
	s := &testServer{addr: ln.Addr().String(), clientK: startServer(t).clientK}
	c := s.conn(resource.PropertyMap{"dialErrorLimit": resource.NewNumberProperty(3)})
	_, err = create(t, remoteURN, resource.PropertyMap{"connection": c, "create": resource.NewStringProperty("true")})
	if err == nil {
		t.Fatal("dial must fail")
	}
	time.Sleep(50 * time.Millisecond)
	// Upstream: dialErrorLimit + 1 attempts, then "after N failed attempts: ...".
	if n := len(accepted); n != 4 || !strings.Contains(err.Error(), "after 3 failed attempts: ") {
		t.Fatalf("want exactly 4 dial attempts as upstream, got %d (%v)", n, err)
	}
}

func TestRetryDelayIsUpstreams(t *testing.T) {
	d := retryDelaySchedule
	want := []time.Duration{100 * time.Millisecond, 150 * time.Millisecond, 225 * time.Millisecond,
		337500 * time.Microsecond}
	for i, w := range want {
		if got := d(i); got != w {
			t.Errorf("delay %d = %v, want %v", i, got, w)
		}
	}
	if got := d(40); got != 5*time.Second {
		t.Errorf("delay cap = %v, want 5s", got)
	}
}
