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

// errHostKey marks a host key mismatch: never retried, since retrying cannot
// make a wrong server right.
var errHostKey = errors.New("ssh: host key mismatch")

// retryDelay is the pause before dial attempt n+1 (a var so tests run fast).
var retryDelay = func(n int) time.Duration {
	return min(time.Duration(n)*time.Second, 5*time.Second)
}

// clientConfig builds auth and host key checking. The returned closer releases
// the agent socket, if one was opened.
func (c Conn) clientConfig() (*ssh.ClientConfig, func(), error) {
	cfg := &ssh.ClientConfig{User: c.User}
	closer := func() {}
	if c.PrivateKey != "" {
		var signer ssh.Signer
		var err error
		if c.PrivateKeyPassword != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.PrivateKey), []byte(c.PrivateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.PrivateKey))
		}
		if err != nil {
			return nil, closer, fmt.Errorf("connection.privateKey: %w", err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.Password != "" {
		pw := c.Password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				ans := make([]string, len(qs))
				for i := range qs {
					ans[i] = pw
				}
				return ans, nil
			}))
	}
	sock := c.AgentSocketPath
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK") // upstream's documented default
	}
	if sock != "" {
		if ac, err := net.Dial("unix", sock); err == nil {
			cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(ac).Signers))
			closer = func() { ac.Close() }
		} else if c.AgentSocketPath != "" {
			return nil, closer, fmt.Errorf("connection.agentSocketPath: %w", err)
		}
	}
	if len(cfg.Auth) == 0 {
		return nil, closer, fmt.Errorf("connection: no authentication (set privateKey, password or agentSocketPath)")
	}
	if err := c.hostKeyCheck(cfg); err != nil {
		return nil, closer, err
	}
	return cfg, closer, nil
}

// hostKeyCheck pins the server key when hostKey is set. It also asks the
// server for that key's algorithm, or a server with several keys could offer
// another one and be refused although it is the right host.
func (c Conn) hostKeyCheck(cfg *ssh.ClientConfig) error {
	if c.HostKey == "" {
		cfg.HostKeyCallback = ssh.InsecureIgnoreHostKey() // upstream: unset means accept any
		return nil
	}
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.HostKey))
	if err != nil {
		return fmt.Errorf("connection.hostKey: not an authorized_keys line: %w", err)
	}
	if want.Type() == ssh.KeyAlgoRSA {
		cfg.HostKeyAlgorithms = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	} else {
		cfg.HostKeyAlgorithms = []string{want.Type()}
	}
	cfg.HostKeyCallback = func(host string, _ net.Addr, got ssh.PublicKey) error {
		if !bytes.Equal(got.Marshal(), want.Marshal()) {
			return fmt.Errorf("%w for %s: got %s %s, want %s %s", errHostKey, host,
				got.Type(), ssh.FingerprintSHA256(got), want.Type(), ssh.FingerprintSHA256(want))
		}
		return nil
	}
	return nil
}

// dial connects with up to DialErrorLimit attempts (-1: until ctx ends), each
// bounded by PerDialTimeout, because freshly booted hosts often refuse the
// first connections.
func dial(ctx context.Context, c Conn) (*ssh.Client, error) {
	cfg, closeAgent, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	defer closeAgent()
	addr := net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
	var lastErr error
	for n := 1; c.DialErrorLimit < 0 || n <= max(c.DialErrorLimit, 1); n++ {
		cl, err := dialOnce(ctx, addr, cfg, c.PerDialTimeout)
		if err == nil {
			return cl, nil
		}
		lastErr = err
		if errors.Is(err, errHostKey) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryDelay(n)):
		}
	}
	if ctx.Err() != nil && !errors.Is(lastErr, errHostKey) {
		return nil, fmt.Errorf("ssh dial %s@%s: %w (last error: %v)", c.User, addr, ctx.Err(), lastErr)
	}
	return nil, fmt.Errorf("ssh dial %s@%s: %w", c.User, addr, lastErr)
}

func dialOnce(ctx context.Context, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl) // bounds the handshake too
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
	_ = nc.SetDeadline(time.Time{})
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
		return result{stdout: out.finish(), stderr: errw.finish()},
			fmt.Errorf("command %q stopped: %w", j.cmd, ctx.Err())
	}
	res := result{stdout: out.finish(), stderr: errw.finish()}
	var ee *ssh.ExitError
	switch {
	case err == nil:
		return res, nil
	case errors.As(err, &ee):
		return res, j.exitError(ee.ExitStatus(), res.stderr)
	default:
		return res, fmt.Errorf("running %q: %w", j.cmd, err)
	}
}
