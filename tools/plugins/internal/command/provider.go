// Package command is a stand-in for the pulumi-command 1.2.1 provider: same
// resource tokens and property names, so the pinned pulumi_command Python SDK
// drives it unchanged, and an upstream binary can later replace it.
package command

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Version is what GetPluginInfo reports: the upstream release we mimic.
const Version = "1.2.1"

// Resource type tokens.
const (
	TypeRemote = "command:remote:Command"
	TypeLocal  = "command:local:Command"
)

// Provider implements the command provider over the raw gRPC interface.
type Provider struct {
	pulumirpc.UnimplementedResourceProviderServer
	log    Logger
	root   context.Context // cancelled by the engine's Cancel RPC
	cancel context.CancelFunc
}

// New returns a provider logging to log (nil: no engine, e.g. tests).
func New(log Logger) *Provider {
	if log == nil {
		log = nopLogger{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Provider{log: log, root: ctx, cancel: cancel}
}

func (p *Provider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

// Configure: secrets are kept end to end; preview is supported in the sense
// that Create/Update answer previews without running anything.
func (p *Provider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *Provider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.cancel()
	return &emptypb.Empty{}, nil
}

// opContext bounds an operation by the engine's custom timeout (seconds, 0 =
// none) and by Cancel.
func (p *Provider) opContext(ctx context.Context, timeout float64) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.root, cancel)
	if timeout > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, time.Duration(timeout*float64(time.Second)))
		return ctx, func() { c2(); stop(); cancel() }
	}
	return ctx, func() { stop(); cancel() }
}

func typeOf(urn string) (string, error) {
	t := string(resource.URN(urn).Type())
	if t != TypeRemote && t != TypeLocal {
		return "", fmt.Errorf("unknown resource type %q (this provider serves %s and %s)", t, TypeRemote, TypeLocal)
	}
	return t, nil
}

func newID(urn string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return resource.URN(urn).Name() + "-" + hex.EncodeToString(b)
}

func (p *Provider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	// No drift detection, as upstream: a command's effects cannot be read back.
	return &pulumirpc.ReadResponse{Id: req.Id, Properties: req.Properties, Inputs: req.Inputs}, nil
}
