package random

import (
	"context"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/bcrypt"

	"hft-deploy.local/plugins/internal/props"
)

const (
	pwURN  = "urn:pulumi:dev::hft::random:index/randomPassword:RandomPassword::db"
	strURN = "urn:pulumi:dev::hft::random:index/randomString:RandomString::suffix"
)

func num(n float64) resource.PropertyValue { return resource.NewNumberProperty(n) }

func count(s, set string) int {
	n := 0
	for _, r := range s {
		if strings.ContainsRune(set, r) {
			n++
		}
	}
	return n
}

func TestGenerateConstraints(t *testing.T) {
	p := Params{Length: 12, Upper: true, Lower: true, Numeric: true, Special: true,
		MinUpper: 2, MinLower: 2, MinNumeric: 3, MinSpecial: 1}
	seen := map[string]bool{}
	for range 300 {
		s, err := Generate(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != 12 || count(s, UpperChars) < 2 || count(s, LowerChars) < 2 ||
			count(s, NumChars) < 3 || count(s, DefaultSpecial) < 1 {
			t.Fatalf("constraints violated: %q", s)
		}
		seen[s] = true
	}
	if len(seen) < 299 {
		t.Fatalf("suspiciously few distinct values: %d", len(seen))
	}
	only, _ := Generate(Params{Length: 40, Numeric: true})
	if count(only, NumChars) != 40 {
		t.Fatalf("numeric only: %q", only)
	}
	ov, _ := Generate(Params{Length: 30, Special: true, OverrideSpecial: "_-"})
	if count(ov, "_-") != 30 {
		t.Fatalf("overrideSpecial: %q", ov)
	}
}

func check(t *testing.T, m resource.PropertyMap) (*pulumirpc.CheckResponse, resource.PropertyMap) {
	t.Helper()
	st, _ := props.Marshal(m)
	r, err := (&Provider{}).Check(context.Background(), &pulumirpc.CheckRequest{Urn: pwURN, News: st})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := props.Unmarshal(r.Inputs)
	return r, in
}

func TestCheck(t *testing.T) {
	r, in := check(t, resource.PropertyMap{"length": num(16), "number": resource.NewBoolProperty(false)})
	if len(r.Failures) > 0 || !props.Bool(in, "upper", false) || props.Bool(in, "numeric", true) ||
		props.Num(in, "minSpecial", -1) != 0 {
		t.Fatalf("defaults: %v %v", r.Failures, in)
	}
	for prop, m := range map[string]resource.PropertyMap{
		"length":   {"length": num(0)},
		"minUpper": {"length": num(8), "minUpper": num(-1)},
	} {
		if r, _ := check(t, m); len(r.Failures) == 0 || r.Failures[0].Property != prop {
			t.Errorf("want failure on %s, got %v", prop, r.Failures)
		}
	}
	r, _ = check(t, resource.PropertyMap{"length": num(4), "minUpper": num(3), "minNumeric": num(2)})
	if len(r.Failures) != 1 || !strings.Contains(r.Failures[0].Reason, "sum") {
		t.Errorf("min sum > length must fail, got %v", r.Failures)
	}
	r, _ = check(t, resource.PropertyMap{"length": num(4), "number": resource.NewBoolProperty(true),
		"numeric": resource.NewBoolProperty(false)})
	if len(r.Failures) != 1 {
		t.Errorf("number/numeric conflict must fail, got %v", r.Failures)
	}
}

func TestCreatePasswordAndString(t *testing.T) {
	_, in := check(t, resource.PropertyMap{"length": num(24), "special": resource.NewBoolProperty(false)})
	out, id, err := generate(TypePassword, in, false)
	if err != nil {
		t.Fatal(err)
	}
	if id != "none" || !out["result"].IsSecret() || !out["bcryptHash"].IsSecret() {
		t.Fatalf("password outputs must be secret: id=%q %v", id, out)
	}
	pw, _ := props.Str(out, "result")
	hash, _ := props.Str(out, "bcryptHash")
	if len(pw) != 24 || count(pw, DefaultSpecial) != 0 {
		t.Fatalf("bad password %q", pw)
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)); err != nil {
		t.Fatalf("bcryptHash does not match result: %v", err)
	}
	sOut, sID, err := generate(TypeString, in, false)
	if err != nil || sOut["result"].IsSecret() || sID != props.Plain(sOut["result"]).StringValue() {
		t.Fatalf("string: id=%q %v %v", sID, sOut, err)
	}
	prev, _, _ := generate(TypePassword, in, true)
	if !props.Plain(prev["result"]).IsComputed() {
		t.Fatalf("preview result must be unknown: %v", prev["result"])
	}
}

func TestDiffReplacesOnAnyInputChange(t *testing.T) {
	old := resource.PropertyMap{"length": num(16), "result": resource.MakeSecret(resource.NewStringProperty("x"))}
	if d := diff(old, resource.PropertyMap{"length": num(16)}); d.Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("result must be ignored: %v", d)
	}
	d := diff(old, resource.PropertyMap{"length": num(16),
		"keepers": resource.NewObjectProperty(resource.PropertyMap{"rev": resource.NewStringProperty("2")})})
	if d.Changes != pulumirpc.DiffResponse_DIFF_SOME || len(d.Replaces) != 1 || d.Replaces[0] != "keepers" {
		t.Fatalf("keepers change must replace: %v", d)
	}
}
