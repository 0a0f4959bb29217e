package command

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// Logging modes of pulumi-command 1.x (`logging` property).
const (
	LogStdout          = "stdout"
	LogStderr          = "stderr"
	LogStdoutAndStderr = "stdoutAndStderr"
	LogNone            = "none"
)

// job is one command run, local or remote, with everything but the transport.
type job struct {
	cmd     string
	env     map[string]string // user `environment`
	prevEnv map[string]string // PULUMI_COMMAND_STDOUT/STDERR of the previous run
	stdin   *string
	logging string
	urn     resource.URN
	log     Logger
	quiet   bool // secret inputs: the output is secret, so never stream it as plain log lines
}

// result is what a finished command leaves in the state.
type result struct{ stdout, stderr string }

// streams builds the two capture writers, wired to the engine log per `logging`.
func (j *job) streams(ctx context.Context) (out, errw *capture) {
	out, errw = &capture{}, &capture{}
	lg := j.log
	if lg == nil {
		lg = nopLogger{}
	}
	if j.quiet {
		if j.logging != LogNone {
			_ = lg.LogStatus(ctx, diag.Info, j.urn, "output not streamed: the command's inputs are secret")
		}
		return out, errw
	}
	if j.logging == LogStdout || j.logging == LogStdoutAndStderr {
		out.emit = func(l string) { _ = lg.Log(ctx, diag.Info, j.urn, l) }
	}
	if j.logging == LogStderr || j.logging == LogStdoutAndStderr {
		errw.emit = func(l string) { _ = lg.Log(ctx, diag.Info, j.urn, l) }
	}
	return out, errw
}

// exitError reports a non-zero exit. stderr is included (last 20 lines) unless
// logging is "none": that setting exists to keep output out of the engine's
// logs and error messages, so we honour it here too.
func (j *job) exitError(code int, stderr string) error {
	if j.logging == LogNone {
		return fmt.Errorf("command exited with code %d (output hidden: logging is %q)", code, LogNone)
	}
	return fmt.Errorf("command exited with code %d: %q\nstderr (last 20 lines):\n%s",
		code, firstLine(j.cmd), tail(stderr, 20))
}

// firstLine names a command in an error without repeating a long script: the whole text
// is in the resource's inputs already, and a multi-kilobyte error buries the stderr tail.
func firstLine(cmd string) string {
	line, rest, _ := strings.Cut(cmd, "\n")
	if len(line) > 200 {
		line = line[:200]
	}
	if rest != "" {
		line += " ..."
	}
	return line
}

// sortedKeys gives a stable order so env handling is deterministic.
func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
