package command

import (
	"context"
	"errors"
	"fmt"
	"sort"

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
	quiet   bool                    // secret inputs: the output is secret, so never stream it as plain log lines
	stop    context.CancelCauseFunc // stops the run (the line guard uses it); nil in some tests
	both    *lockedBuffer           // stdout+stderr interleaved, for the error message
}

// result is what a finished command leaves in the state.
type result struct{ stdout, stderr string }

func (j *job) logsStdout() bool { return j.logging == LogStdout || j.logging == LogStdoutAndStderr }
func (j *job) logsStderr() bool { return j.logging == LogStderr || j.logging == LogStdoutAndStderr }

// streams builds the two capture writers. Lines of the streams `logging`
// selects go to the engine as ephemeral status messages, as upstream sends
// them (shown while the step runs, not kept in the final diagnostics).
func (j *job) streams(ctx context.Context) (out, errw *capture) {
	j.both = &lockedBuffer{}
	out = &capture{name: "stdout", both: j.both}
	errw = &capture{name: "stderr", both: j.both}
	// Upstream hangs on a long line of any logged stream, secret or not.
	guard := &lineGuard{logging: j.logging, stop: j.stop}
	if j.logsStdout() {
		out.guard = guard
	}
	if j.logsStderr() {
		errw.guard = guard
	}
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
	emit := func(l string) { _ = lg.LogStatus(ctx, diag.Info, j.urn, l) }
	if j.logsStdout() {
		out.emit = emit
	}
	if j.logsStderr() {
		errw.emit = emit
	}
	return out, errw
}

// runError is upstream's error for a failed run, whatever `logging` says and
// whether or not inputs are secret: the transport's error (locally "exit
// status N", remotely "Process exited with status N"), the whole command text
// Go-quoted, then all of stdout and stderr as they interleaved.
func (j *job) runError(err error) error {
	both := ""
	if j.both != nil {
		both = j.both.String()
	}
	return fmt.Errorf("%w: running %q:\n%s", err, j.cmd, both)
}

// longLine is the line guard's error once it tripped, else nil. Checked after
// every run: the command may have exited before being stopped.
func (j *job) longLine(ctx context.Context) error {
	var ll *longLineError
	if cause := context.Cause(ctx); errors.As(cause, &ll) {
		return ll
	}
	return nil
}

// stopped is the error for a run ended by its context: the line guard's
// error when it stopped the run, else the timeout or Cancel.
func (j *job) stopped(ctx context.Context) error {
	if err := j.longLine(ctx); err != nil {
		return err
	}
	return fmt.Errorf("command %q stopped: %w", j.cmd, ctx.Err())
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
