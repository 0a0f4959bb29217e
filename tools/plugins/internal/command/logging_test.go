package command

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"hft-deploy.local/plugins/internal/props"
)

// recorder is a Logger that keeps what the engine would have been sent.
type recorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *recorder) Log(_ context.Context, _ diag.Severity, _ resource.URN, m string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, m)
	return nil
}

func (r *recorder) LogStatus(ctx context.Context, s diag.Severity, u resource.URN, m string) error {
	return r.Log(ctx, s, u, "status: "+m)
}

func TestLoggingModes(t *testing.T) {
	cases := []struct {
		logging string
		stdin   resource.PropertyValue
		want    string
	}{
		// Lines are ephemeral status messages, as upstream sends them.
		{LogStdoutAndStderr, str(""), "status: err|status: out"},
		{LogStdout, str(""), "status: out"},
		{LogStderr, str(""), "status: err"},
		{LogNone, str(""), ""},
		{LogStdoutAndStderr, resource.MakeSecret(str("")), "status: output not streamed: the command's inputs are secret"},
	}
	for _, c := range cases {
		rec := &recorder{}
		st, _ := props.Marshal(resource.PropertyMap{"create": str("echo out; echo err >&2"),
			"logging": str(c.logging), "stdin": c.stdin})
		if _, err := New(rec).Create(context.Background(), &pulumirpc.CreateRequest{Urn: localURN, Properties: st}); err != nil {
			t.Fatal(err)
		}
		sort.Strings(rec.lines) // stdout and stderr are read concurrently: order is not defined
		if got := strings.Join(rec.lines, "|"); got != c.want {
			t.Errorf("logging %s (secret stdin %v): logged %q, want %q", c.logging, c.stdin.IsSecret(), got, c.want)
		}
	}
}
