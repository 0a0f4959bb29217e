package command

import (
	"bytes"
	"context"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Logger is the part of provider.HostClient used here; an interface so tests
// can run without an engine.
type Logger interface {
	Log(ctx context.Context, sev diag.Severity, urn resource.URN, msg string) error
	LogStatus(ctx context.Context, sev diag.Severity, urn resource.URN, msg string) error
}

type nopLogger struct{}

func (nopLogger) Log(context.Context, diag.Severity, resource.URN, string) error       { return nil }
func (nopLogger) LogStatus(context.Context, diag.Severity, resource.URN, string) error { return nil }

// capture keeps a stream's full output (it becomes the stdout/stderr output
// property) and, when enabled, forwards each complete line to the engine as it
// arrives, so long-running remote commands show progress like upstream does.
type capture struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	emit    func(line string) // nil: logging of this stream is off
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all.Write(p)
	if c.emit == nil {
		return len(p), nil
	}
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.emit(strings.TrimRight(string(c.partial[:i]), "\r"))
		c.partial = c.partial[i+1:]
	}
	return len(p), nil
}

// finish flushes an unterminated last line and returns the output with one
// trailing newline removed (as upstream stores it).
func (c *capture) finish() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.emit != nil && len(c.partial) > 0 {
		c.emit(string(c.partial))
		c.partial = nil
	}
	return strings.TrimSuffix(c.all.String(), "\n")
}

// tail returns the last n lines of s, for error messages that must stay short.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
