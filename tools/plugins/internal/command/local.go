package command

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// DefaultInterpreter is pulumi-command's default on Linux and macOS.
var DefaultInterpreter = []string{"/bin/sh", "-c"}

// runLocal runs j.cmd through the interpreter on this machine. The command gets
// its own process group so a timeout or Cancel kills the whole tree, not just
// the shell.
func runLocal(ctx context.Context, interp []string, dir string, j *job) (result, error) {
	if len(interp) == 0 {
		interp = DefaultInterpreter
	}
	args := append(append([]string{}, interp[1:]...), j.cmd)
	c := exec.CommandContext(ctx, interp[0], args...)
	c.Dir = dir
	c.Env = os.Environ()
	for _, k := range sortedKeys(j.prevEnv) {
		c.Env = append(c.Env, k+"="+j.prevEnv[k])
	}
	for _, k := range sortedKeys(j.env) {
		c.Env = append(c.Env, k+"="+j.env[k])
	}
	if j.stdin != nil {
		c.Stdin = strings.NewReader(*j.stdin)
	}
	out, errw := j.streams(ctx)
	c.Stdout, c.Stderr = out, errw
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second

	err := c.Run()
	res := result{stdout: out.finish(), stderr: errw.finish()}
	if ll := j.longLine(ctx); ll != nil {
		return res, ll
	}
	if err == nil {
		return res, nil
	}
	if ctx.Err() != nil {
		return res, j.stopped(ctx)
	}
	return res, j.runError(err) // upstream formats start errors the same way
}
