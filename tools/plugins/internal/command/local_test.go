package command

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"hft-deploy.local/plugins/internal/props"
)

const localURN = "urn:pulumi:dev::hft::command:local:Command::build"

func str(s string) resource.PropertyValue { return resource.NewStringProperty(s) }

func TestLocalLifecycle(t *testing.T) {
	dir := t.TempDir()
	in := resource.PropertyMap{
		"create": str(`echo "made in $(basename "$PWD")"; cat`), "dir": str(dir),
		"stdin":  str("input"),
		"update": str(`echo "was:$PULUMI_COMMAND_STDOUT"`),
		"delete": str(`echo "$PULUMI_COMMAND_STDOUT" > gone`),
	}
	out, err := create(t, localURN, in)
	if err != nil {
		t.Fatal(err)
	}
	want := "made in " + filepath.Base(dir) + "\ninput"
	if got, _ := props.Str(out, "stdout"); got != want {
		t.Fatalf("create stdout %q, want %q", got, want)
	}
	p := New(nil)
	olds, _ := props.Marshal(out)
	news := in.Copy()
	news["environment"] = resource.NewObjectProperty(resource.PropertyMap{"X": str("1")})
	ns, _ := props.Marshal(news)
	up, err := p.Update(context.Background(), &pulumirpc.UpdateRequest{Urn: localURN, Olds: olds, News: ns})
	if err != nil {
		t.Fatal(err)
	}
	upOut, _ := props.Unmarshal(up.Properties)
	if got, _ := props.Str(upOut, "stdout"); got != "was:"+want {
		t.Fatalf("update stdout %q", got)
	}
	st, _ := props.Marshal(upOut)
	if _, err := p.Delete(context.Background(), &pulumirpc.DeleteRequest{Urn: localURN, Properties: st}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "gone"))
	if err != nil || strings.TrimSpace(string(b)) != "was:"+want {
		t.Fatalf("delete did not see previous stdout: %q %v", b, err)
	}
}

func TestLocalPreviewRunsNothing(t *testing.T) {
	dir := t.TempDir()
	st, _ := props.Marshal(resource.PropertyMap{"create": str("touch ran"), "dir": str(dir)})
	resp, err := New(nil).Create(context.Background(), &pulumirpc.CreateRequest{Urn: localURN, Properties: st, Preview: true})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := props.Unmarshal(resp.Properties)
	if !out["stdout"].IsComputed() {
		t.Fatalf("preview stdout must be unknown, got %v", out["stdout"])
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Fatal("preview ran the command")
	}
}

func TestLocalFailureAndTimeout(t *testing.T) {
	_, err := create(t, localURN, resource.PropertyMap{"create": str("echo nope >&2; exit 7")})
	if want := "exit status 7: running \"echo nope >&2; exit 7\":\nnope\n"; err == nil || err.Error() != want {
		t.Fatalf("want upstream's %q, got %v", want, err)
	}
	st, _ := props.Marshal(resource.PropertyMap{"create": str("sleep 30")})
	start := time.Now()
	_, err = New(nil).Create(context.Background(), &pulumirpc.CreateRequest{Urn: localURN, Properties: st, Timeout: 0.3})
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("timeout not honoured: %v after %v", err, time.Since(start))
	}
}

func TestLocalInterpreter(t *testing.T) {
	out, err := create(t, localURN, resource.PropertyMap{
		"create":      str("print(6*7)"),
		"interpreter": resource.NewArrayProperty([]resource.PropertyValue{str("/bin/sh"), str("-c"), str("echo 42 #")}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := props.Str(out, "stdout"); got != "42" {
		t.Fatalf("stdout %q", got)
	}
}
