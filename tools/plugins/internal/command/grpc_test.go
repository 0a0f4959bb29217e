package command

import (
	"context"
	"net"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"hft-deploy.local/plugins/internal/props"
)

// TestOverGRPC drives the provider through a real gRPC connection, the way
// the engine does: plugin info, configure, check, create.
func TestOverGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pulumirpc.RegisterResourceProviderServer(srv, New(nil))
	go func() { _ = srv.Serve(ln) }()
	defer srv.Stop()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pulumirpc.NewResourceProviderClient(cc)
	ctx := context.Background()

	info, err := c.GetPluginInfo(ctx, &emptypb.Empty{})
	if err != nil || info.Version != Version {
		t.Fatalf("plugin info %v %v", info, err)
	}
	cfg, err := c.Configure(ctx, &pulumirpc.ConfigureRequest{AcceptSecrets: true})
	if err != nil || !cfg.AcceptSecrets {
		t.Fatalf("configure %v %v", cfg, err)
	}
	news, _ := props.Marshal(resource.PropertyMap{"create": str("echo hi")})
	chk, err := c.Check(ctx, &pulumirpc.CheckRequest{Urn: localURN, News: news})
	if err != nil || len(chk.Failures) > 0 {
		t.Fatalf("check %v %v", chk, err)
	}
	cr, err := c.Create(ctx, &pulumirpc.CreateRequest{Urn: localURN, Properties: chk.Inputs})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := props.Unmarshal(cr.Properties)
	if got, _ := props.Str(out, "stdout"); got != "hi" || cr.Id == "" {
		t.Fatalf("create id=%q stdout=%q", cr.Id, got)
	}
}
