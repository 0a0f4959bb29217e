package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// errHostKey marks a host key mismatch.
var errHostKey = errors.New("ssh: host key mismatch")

// retryDelay is the pause after failed dial attempt n (0-based): upstream's
// retry.Until defaults, 100 ms growing 1.5x up to 5 s (a var so tests run fast).
var retryDelay = func(n int) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < n && d < 5*time.Second; i++ {
		d = time.Duration(float64(d) * 1.5)
	}
	return min(d, 5*time.Second)
}

// clientConfig builds auth and host key checking the way upstream's
// SSHConfig does. The returned closer releases the agent socket, if one was
// opened.
func (c Conn) clientConfig() (*ssh.ClientConfig, func(), error) {
	cfg := &ssh.ClientConfig{User: c.User}
	closer := func() {}
	if c.PrivateKey != nil {
		var signer ssh.Signer
		var err error
		if c.PrivateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*c.PrivateKey), []byte(*c.PrivateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*c.PrivateKey))
		}
		if err != nil {
			return nil, closer, fmt.Errorf("connection.privateKey: %w", err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.Password != nil {
		pw := *c.Password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				ans := make([]string, len(qs))
				for i := range qs {
					ans[i] = pw
				}
				return ans, nil
			}))
	}
	// As upstream: agentSocketPath when present (even ""), else $SSH_AUTH_SOCK
	// when non-empty; a socket chosen either way is dialled whatever other auth
	// is set, and a failed dial fails the command. So a stale SSH_AUTH_SOCK
	// breaks every remote command unless agentSocketPath names a live agent.
	sock := c.AgentSocketPath
	if sock == nil {
		if env := os.Getenv("SSH_AUTH_SOCK"); env != "" {
			sock = &env
		}
	}
	if sock != nil {
		ac, err := net.Dial("unix", *sock)
		if err != nil {
			return nil, closer, err // upstream returns the dial error as is
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(ac).Signers))
		closer = func() { ac.Close() }
	}
	if len(cfg.Auth) == 0 {
		return nil, closer, fmt.Errorf("connection: no authentication (set privateKey, password or agentSocketPath)")
	}
	if err := c.hostKeyCheck(cfg); err != nil {
		closer()
		return nil, func() {}, err
	}
	return cfg, closer, nil
}

// parseHostKey reads a hostKey input (an authorized_keys line). "" is an
// error, as upstream: ssh.ParseAuthorizedKey says "ssh: no key found".
func parseHostKey(line string) (ssh.PublicKey, error) {
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return nil, fmt.Errorf("connection.hostKey: %w", err)
	}
	return k, nil
}

// hostKeyCheck pins the server key when hostKey is present, as upstream: the
// key must match exactly and only that key's type is offered as host key
// algorithm (so a pinned "ssh-rsa" key offers ssh-rsa alone, which OpenSSH
// >= 8.8 refuses: pin ed25519 keys). Absent: any key is accepted.
func (c Conn) hostKeyCheck(cfg *ssh.ClientConfig) error {
	if c.HostKey == nil {
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() // upstream: absent means accept any
		return nil
	}
	want, err := parseHostKey(*c.HostKey)
	if err != nil {
		return err
	}
	cfg.HostKeyAlgorithms = []string{want.Type()}
	cfg.HostKeyCallback = func(host string, _ net.Addr, got ssh.PublicKey) error {
		if !bytes.Equal(got.Marshal(), want.Marshal()) {
			return fmt.Errorf("%w for %s: got %s %s, want %s %s", errHostKey, host,
				got.Type(), ssh.FingerprintSHA256(got), want.Type(), ssh.FingerprintSHA256(want))
		}
		return nil
	}
	return nil
}

// dial connects as upstream does: DialErrorLimit+1 attempts (a negative limit:
// until ctx ends), every failure retried, a host key mismatch included, with
// retryDelay between attempts; PerDialTimeout bounds each TCP connect.
func dial(ctx context.Context, c Conn) (*ssh.Client, error) {
	cfg, closeAgent, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	defer closeAgent()
	addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	for try := 0; ; try++ {
		cl, err := dialOnce(ctx, addr, cfg, c.PerDialTimeout)
		if err == nil {
			return cl, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("ssh dial %s@%s: %w (last error: %v)", c.User, addr, ctx.Err(), err)
		}
		if c.DialErrorLimit > -1 && try+1 > c.DialErrorLimit {
			return nil, fmt.Errorf("after %d failed attempts: %w", try, err) // upstream's wording
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("ssh dial %s@%s: %w (last error: %v)", c.User, addr, ctx.Err(), err)
		case <-time.After(retryDelay(try)):
		}
	}
}

// dialOnce is one attempt. As upstream (ssh.ClientConfig.Timeout), the
// timeout bounds the TCP connect only, not the SSH handshake; ctx (the
// operation's timeout or the engine's Cancel) still ends a hung handshake.
func dialOnce(ctx context.Context, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	nc, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() }) // Cancel during the handshake
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if !stop() || err != nil {
		if err == nil {
			err = ctx.Err()
			sc.Close()
		}
		nc.Close()
		return nil, err
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

// runRemote runs j.cmd in a new SSH session. `environment` goes through
// Setenv, which sshd only honours for names in its AcceptEnv list; like
// upstream, a refused user variable is an error, a refused
// PULUMI_COMMAND_STDOUT/STDERR only a warning.
func runRemote(ctx context.Context, c Conn, j *job) (result, error) {
	cl, err := dial(ctx, c)
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	s, err := cl.NewSession()
	if err != nil {
		return result{}, fmt.Errorf("ssh session: %w", err)
	}
	defer s.Close()
	for _, k := range sortedKeys(j.env) {
		if err := s.Setenv(k, j.env[k]); err != nil {
			return result{}, fmt.Errorf("could not set environment variable %q on the remote host (%w); "+
				"sshd accepts only names listed in its AcceptEnv, or prefix the command with VAR=value", k, err)
		}
	}
	for _, k := range sortedKeys(j.prevEnv) {
		// Warn only when the command uses the variable: with sshd's default
		// AcceptEnv this fails on every update and delete.
		if err := s.Setenv(k, j.prevEnv[k]); err != nil && j.log != nil && strings.Contains(j.cmd, k) {
			_ = j.log.Log(ctx, diag.Warning, j.urn, fmt.Sprintf("could not set %s on the remote host "+
				"(sshd accepts only names in its AcceptEnv): %v", k, err))
		}
	}
	if j.stdin != nil {
		s.Stdin = strings.NewReader(*j.stdin)
	}
	out, errw := j.streams(ctx)
	s.Stdout, s.Stderr = out, errw
	done := make(chan error, 1)
	go func() { done <- s.Run(j.cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Signal(ssh.SIGKILL)
		cl.Close()
		<-done
		return result{stdout: out.finish(), stderr: errw.finish()}, j.stopped(ctx)
	}
	res := result{stdout: out.finish(), stderr: errw.finish()}
	if ll := j.longLine(ctx); ll != nil {
		return res, ll
	}
	if err != nil {
		return res, j.runError(err) // *ssh.ExitError: "Process exited with status N"
	}
	return res, nil
}
