package command

import (
	"context"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"

	"hft-deploy.local/plugins/internal/props"
)

// Create runs `create`. A failing command fails the resource (nothing is
// recorded), so the next `up` tries again, as upstream.
func (p *Provider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	if _, err := typeOf(req.Urn); err != nil {
		return nil, err
	}
	in, err := props.Unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	if req.Preview {
		out, err := props.Marshal(withUnknownOutputs(in))
		return &pulumirpc.CreateResponse{Properties: out}, err
	}
	ctx, cancel := p.opContext(ctx, req.Timeout)
	defer cancel()
	res, err := p.run(ctx, req.Urn, in, "create", nil)
	if err != nil {
		return nil, err
	}
	out, err := props.Marshal(withOutputs(in, res, "create"))
	return &pulumirpc.CreateResponse{Id: newID(req.Urn), Properties: out}, err
}

// Update runs `update`, or `create` when no update command is given.
func (p *Provider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	if _, err := typeOf(req.Urn); err != nil {
		return nil, err
	}
	olds, err := props.Unmarshal(req.Olds)
	if err != nil {
		return nil, err
	}
	news, err := props.Unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	if req.Preview {
		out, err := props.Marshal(withUnknownOutputs(news))
		return &pulumirpc.UpdateResponse{Properties: out}, err
	}
	ctx, cancel := p.opContext(ctx, req.Timeout)
	defer cancel()
	key := "update"
	if cmd, _ := props.Str(news, key); cmd == "" {
		key = "create"
	}
	res, err := p.run(ctx, req.Urn, news, key, previous(olds, news))
	if err != nil {
		return nil, err
	}
	out, err := props.Marshal(withOutputs(news, res, key))
	return &pulumirpc.UpdateResponse{Properties: out}, err
}

// Delete runs `delete`, if set, with the last run's output in the env.
func (p *Provider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	if _, err := typeOf(req.Urn); err != nil {
		return nil, err
	}
	st, err := props.Unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.opContext(ctx, req.Timeout)
	defer cancel()
	_, err = p.run(ctx, req.Urn, st, "delete", previous(st, st))
	return &emptypb.Empty{}, err
}

// previous is PULUMI_COMMAND_STDOUT/STDERR from the state `st`, unless the
// current inputs turned addPreviousOutputInEnv off (default on).
func previous(st, in resource.PropertyMap) map[string]string {
	if !props.Bool(in, "addPreviousOutputInEnv", true) {
		return nil
	}
	out, _ := props.Str(st, "stdout")
	errs, _ := props.Str(st, "stderr")
	return map[string]string{"PULUMI_COMMAND_STDOUT": out, "PULUMI_COMMAND_STDERR": errs}
}

// run executes the command in input cmdKey (no-op when empty) locally or over
// SSH per the resource type.
func (p *Provider) run(ctx context.Context, urn string, in resource.PropertyMap, cmdKey string,
	prev map[string]string,
) (result, error) {
	cmd, _ := props.Str(in, cmdKey)
	if cmd == "" {
		return result{}, nil
	}
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	j := &job{stop: stop, cmd: cmd, env: props.StrMap(in, "environment"), prevEnv: prev,
		logging: LogStdoutAndStderr, urn: resource.URN(urn), log: p.log,
		quiet: sensitive(in, cmdKey)}
	if l, ok := props.Str(in, "logging"); ok {
		j.logging = l
	}
	if s, ok := props.Str(in, "stdin"); ok {
		j.stdin = &s
	}
	if resource.URN(urn).Type() == TypeLocal {
		interp, _ := props.Strs(in, "interpreter")
		dir, _ := props.Str(in, "dir")
		return runLocal(ctx, interp, dir, j)
	}
	conn, err := parseConn(connDefaults(in["connection"]))
	if err != nil {
		return result{}, err
	}
	return runRemote(ctx, conn, j)
}

// withOutputs is the inputs plus stdout/stderr. As upstream, stdout/stderr
// are plain even when the command, stdin or environment is secret: a program
// that needs them secret says so with additional_secret_outputs.
func withOutputs(in resource.PropertyMap, res result, _ string) resource.PropertyMap {
	out := in.Copy()
	out["stdout"], out["stderr"] = resource.NewStringProperty(res.stdout), resource.NewStringProperty(res.stderr)
	return out
}

// sensitive: the run's inputs hold a secret, so its output is not streamed to
// the engine log (our rule, stricter than upstream, which streams it).
func sensitive(in resource.PropertyMap, cmdKey string) bool {
	for _, k := range []string{cmdKey, "stdin", "environment"} {
		if in[resource.PropertyKey(k)].ContainsSecrets() {
			return true
		}
	}
	return false
}

// withUnknownOutputs answers a preview: nothing runs, stdout/stderr unknown.
func withUnknownOutputs(in resource.PropertyMap) resource.PropertyMap {
	out := in.Copy()
	out["stdout"] = resource.MakeComputed(resource.NewStringProperty(""))
	out["stderr"] = resource.MakeComputed(resource.NewStringProperty(""))
	return out
}
