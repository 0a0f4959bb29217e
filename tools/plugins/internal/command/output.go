package command

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
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
// property), copies it into the run's combined output (for the error message,
// as upstream), forwards each complete line to the engine as it arrives when
// emit is set, and passes it through the line guard when upstream would log
// this stream.
type capture struct {
	mu      sync.Mutex
	all     bytes.Buffer
	partial []byte
	emit    func(line string) // nil: this stream is not streamed to the engine
	both    *lockedBuffer     // stdout and stderr interleaved, as upstream's error shows them
	guard   *lineGuard        // nil: upstream would not log this stream
	name    string
}

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all.Write(p)
	if c.both != nil {
		c.both.Write(p)
	}
	if c.guard != nil {
		c.guard.write(c.name, p)
	}
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

// lockedBuffer is a bytes.Buffer both streams write to concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// maxLogLine is the longest output line upstream survives. Upstream writes
// every logged stream into one pipe read by a bufio.Scanner of default size:
// a run of MaxScanTokenSize (64 KiB) bytes without a newline stops the
// scanner, nothing reads the pipe any more, and the command hangs forever.
const maxLogLine = bufio.MaxScanTokenSize

// lineGuard mirrors that pipe: it counts the bytes since the last newline
// across the streams upstream would log (in arrival order, as upstream's
// single pipe sees them) and stops the run with a clear error where upstream
// would hang, so nothing here can come to depend on such output.
type lineGuard struct {
	mu      sync.Mutex
	run     int
	logging string
	stop    func(error)
	tripped bool
}

func (g *lineGuard) write(stream string, p []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tripped {
		return
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		if g.run+len(seg) >= maxLogLine {
			g.tripped = true
			if g.stop != nil {
				g.stop(&longLineError{stream: stream, logging: g.logging})
			}
			return
		}
		if i < 0 {
			g.run += len(seg)
			return
		}
		g.run = 0
		p = p[i+1:]
	}
}

// longLineError stops a command whose logged output has a line upstream
// would hang on.
type longLineError struct{ stream, logging string }

func (e *longLineError) Error() string {
	return fmt.Sprintf("%s has an output line of %d bytes or more (logging %q): upstream "+
		"pulumi-command reads logged output with a 64 KiB line limit and hangs forever on such a "+
		"line, so this build stops the command instead; keep output lines short, or leave that "+
		"stream out of `logging`", e.stream, maxLogLine, e.logging)
}
