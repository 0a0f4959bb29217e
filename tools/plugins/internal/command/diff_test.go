package command

import (
	"context"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"hft-deploy.local/plugins/internal/props"
)

func arr(vs ...string) resource.PropertyValue {
	var a []resource.PropertyValue
	for _, v := range vs {
		a = append(a, str(v))
	}
	return resource.NewArrayProperty(a)
}

func TestDiff(t *testing.T) {
	base := resource.PropertyMap{"create": str("a"), "triggers": arr("1"), "stdout": str("out")}
	cases := []struct {
		name    string
		mod     func(resource.PropertyMap)
		changes pulumirpc.DiffResponse_DiffChanges
		replace bool
	}{
		{"no change, outputs ignored", func(m resource.PropertyMap) { delete(m, "stdout") }, pulumirpc.DiffResponse_DIFF_NONE, false},
		// As upstream (the SDK's DeepEquals): secretness alone is a change.
		{"secretness alone is a change", func(m resource.PropertyMap) { m["create"] = resource.MakeSecret(str("a")) }, pulumirpc.DiffResponse_DIFF_SOME, false},
		{"create changed: update", func(m resource.PropertyMap) { m["create"] = str("b") }, pulumirpc.DiffResponse_DIFF_SOME, false},
		{"delete added: update", func(m resource.PropertyMap) { m["delete"] = str("rm") }, pulumirpc.DiffResponse_DIFF_SOME, false},
		{"triggers changed: replace", func(m resource.PropertyMap) { m["triggers"] = arr("2") }, pulumirpc.DiffResponse_DIFF_SOME, true},
		{"unknown create: update", func(m resource.PropertyMap) { m["create"] = resource.MakeComputed(str("")) }, pulumirpc.DiffResponse_DIFF_SOME, false},
	}
	for _, c := range cases {
		news := base.Copy()
		c.mod(news)
		d := diff(base, news)
		if d.Changes != c.changes || (len(d.Replaces) > 0) != c.replace || d.DeleteBeforeReplace {
			t.Errorf("%s: got changes=%v replaces=%v", c.name, d.Changes, d.Replaces)
		}
	}
}

func TestCheckDefaultsAndRejections(t *testing.T) {
	check := func(urn string, m resource.PropertyMap) *pulumirpc.CheckResponse {
		st, _ := props.Marshal(m)
		r, err := New(nil).Check(context.Background(), &pulumirpc.CheckRequest{Urn: urn, News: st})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	conn := resource.MakeSecret(resource.NewObjectProperty(resource.PropertyMap{"host": str("10.0.0.1"),
		"privateKey": str("k"), "password": str("p"), "privateKeyPassword": str("pp")}))
	r := check(remoteURN, resource.PropertyMap{"connection": conn})
	in, _ := props.Unmarshal(r.Inputs)
	c := in["connection"]
	if !c.IsSecret() {
		t.Fatal("connection must stay secret")
	}
	// As upstream's Check: these are nested secrets inside the connection.
	raw := c.SecretValue().Element.ObjectValue()
	for _, k := range []resource.PropertyKey{"privateKey", "password", "privateKeyPassword"} {
		if !raw[k].IsSecret() {
			t.Errorf("connection.%s must be a nested secret, got %v", k, raw[k])
		}
	}
	if raw["host"].IsSecret() || raw["port"].IsSecret() {
		t.Errorf("only the credentials are nested secrets: %v", raw)
	}
	cm := props.PlainMap(c.SecretValue().Element.ObjectValue())
	if props.Num(cm, "port", 0) != 22 || props.Num(cm, "dialErrorLimit", 0) != 10 ||
		props.Num(cm, "perDialTimeout", 0) != 15 || props.Bool(cm, "x", true) != true {
		t.Fatalf("defaults not filled: %v", cm)
	}
	if u, _ := props.Str(cm, "user"); u != "root" {
		t.Fatalf("user default: %q", u)
	}
	for name, m := range map[string]resource.PropertyMap{
		"connection": {"connection": resource.NewObjectProperty(resource.PropertyMap{
			"host": str("h"), "proxy": resource.NewObjectProperty(resource.PropertyMap{"host": str("b")})})},
		"logging": {"connection": conn, "logging": str("loud")},
	} {
		if r := check(remoteURN, m); len(r.Failures) != 1 || r.Failures[0].Property != name {
			t.Errorf("want a failure on %s, got %v", name, r.Failures)
		}
	}
	// "" is not "no pinning": upstream's ssh.ParseAuthorizedKey says "ssh: no key found".
	r = check(remoteURN, resource.PropertyMap{"connection": resource.NewObjectProperty(resource.PropertyMap{
		"host": str("h"), "hostKey": str("")})})
	if len(r.Failures) != 1 || !strings.Contains(r.Failures[0].Reason, "ssh: no key found") {
		t.Errorf(`hostKey "" must fail Check, got %v`, r.Failures)
	}
	if r := check(localURN, resource.PropertyMap{"assetPaths": arr("*")}); len(r.Failures) != 1 {
		t.Errorf("assetPaths must be rejected, got %v", r.Failures)
	}
}
