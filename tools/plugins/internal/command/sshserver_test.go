package command

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"net"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

var errUnauthorized = errors.New("unauthorized")

// testServer is a minimal real SSH server on 127.0.0.1: it runs "exec"
// requests with /bin/sh, honours "env", pipes stdin and reports the exit
// status, which is all the provider relies on.
type testServer struct {
	addr    string
	hostKey ssh.PublicKey
	clientK string // PEM private key accepted for user "deploy"
	conns   atomic.Int32
}

func newSigner(t *testing.T) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	return s, pem.EncodeToMemory(blk)
}

func startServer(t *testing.T) *testServer {
	t.Helper()
	// As upstream, a set SSH_AUTH_SOCK is dialled on every connection: keep the
	// runner's agent (or a stale socket) out of these tests.
	t.Setenv("SSH_AUTH_SOCK", "")
	host, _ := newSigner(t)
	client, clientPEM := newSigner(t)
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			if string(k.Marshal()) == string(client.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errUnauthorized
		},
		PasswordCallback: func(_ ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if string(pw) == "s3cret" {
				return nil, nil
			}
			return nil, errUnauthorized
		},
	}
	cfg.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &testServer{addr: ln.Addr().String(), hostKey: host.PublicKey(), clientK: string(clientPEM)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go serveConn(c, cfg)
		}
	}()
	return s
}

func serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		go serveSession(ch, creqs)
	}
}

func serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var env []string
	for r := range reqs {
		switch r.Type {
		case "env":
			var kv struct{ K, V string }
			_ = ssh.Unmarshal(r.Payload, &kv)
			env = append(env, kv.K+"="+kv.V)
			_ = r.Reply(true, nil)
		case "exec":
			var cmd struct{ C string }
			_ = ssh.Unmarshal(r.Payload, &cmd)
			_ = r.Reply(true, nil)
			c := exec.Command("/bin/sh", "-c", cmd.C)
			c.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
			c.Stdin, c.Stdout, c.Stderr = ch, ch, ch.Stderr()
			c.WaitDelay = 2 * time.Second
			code := 0
			if err := c.Run(); err != nil {
				code = 255
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				}
			}
			st := make([]byte, 4)
			binary.BigEndian.PutUint32(st, uint32(code))
			_, _ = ch.SendRequest("exit-status", false, st)
			return
		default:
			_ = r.Reply(false, nil)
		}
	}
}
