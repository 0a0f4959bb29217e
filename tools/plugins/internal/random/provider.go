package random

import (
	"context"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/types/known/emptypb"

	"hft-deploy.local/plugins/internal/props"
)

// Version is what GetPluginInfo reports: the upstream release we mimic.
const Version = "4.21.4"

// Resource type tokens.
const (
	TypePassword = "random:index/randomPassword:RandomPassword"
	TypeString   = "random:index/randomString:RandomString"
)

// passwordID is the fixed id upstream gives every RandomPassword, so the
// secret never leaks through the id.
const passwordID = "none"

// Provider implements the random provider over the raw gRPC interface.
type Provider struct {
	pulumirpc.UnimplementedResourceProviderServer
}

func (p *Provider) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (p *Provider) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func typeOf(urn string) (string, error) {
	t := string(resource.URN(urn).Type())
	if t != TypePassword && t != TypeString {
		return "", fmt.Errorf("unknown resource type %q (this provider serves %s and %s)", t, TypePassword, TypeString)
	}
	return t, nil
}

// Check fills defaults and rejects invalid input, naming the property.
func (p *Provider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if _, err := typeOf(req.Urn); err != nil {
		return nil, err
	}
	news, err := props.Unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	fs := applyDefaults(news)
	fs = append(fs, validate(news)...)
	if len(fs) > 0 {
		resp := &pulumirpc.CheckResponse{}
		for _, f := range fs {
			resp.Failures = append(resp.Failures, &pulumirpc.CheckFailure{Property: f.prop, Reason: f.reason})
		}
		return resp, nil
	}
	inputs, err := props.Marshal(news)
	return &pulumirpc.CheckResponse{Inputs: inputs}, err
}

// outputKeys are generated; they never count as input changes.
var outputKeys = []string{"result", "bcryptHash"}

// Diff: every input is ForceNew in terraform-provider-random, so any change
// replaces (create-before-delete).
func (p *Provider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, news, err := props.DiffInputs(req)
	if err != nil {
		return nil, err
	}
	return diff(olds, news), nil
}

func diff(olds, news resource.PropertyMap) *pulumirpc.DiffResponse {
	changed := props.Changed(olds, news, outputKeys...)
	if len(changed) == 0 {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true}
	}
	resp := &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_SOME, Diffs: changed,
		Replaces: changed, DetailedDiff: map[string]*pulumirpc.PropertyDiff{}, HasDetailedDiff: true}
	for _, k := range changed {
		kind := pulumirpc.PropertyDiff_UPDATE_REPLACE
		switch {
		case !props.Has(olds, k):
			kind = pulumirpc.PropertyDiff_ADD_REPLACE
		case !props.Has(news, k):
			kind = pulumirpc.PropertyDiff_DELETE_REPLACE
		}
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	return resp
}

// Create generates the value; on preview the outputs are unknown.
func (p *Provider) Create(_ context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	typ, err := typeOf(req.Urn)
	if err != nil {
		return nil, err
	}
	in, err := props.Unmarshal(req.Properties)
	if err != nil {
		return nil, err
	}
	out, id, err := generate(typ, in, req.Preview)
	if err != nil {
		return nil, err
	}
	s, err := props.Marshal(out)
	return &pulumirpc.CreateResponse{Id: id, Properties: s}, err
}

func generate(typ string, in resource.PropertyMap, preview bool) (resource.PropertyMap, string, error) {
	out := in.Copy()
	secret := func(v resource.PropertyValue) resource.PropertyValue {
		if typ == TypePassword {
			return resource.MakeSecret(v)
		}
		return v
	}
	if preview {
		out["result"] = secret(resource.MakeComputed(resource.NewStringProperty("")))
		if typ == TypePassword {
			out["bcryptHash"] = secret(resource.MakeComputed(resource.NewStringProperty("")))
		}
		return out, "", nil
	}
	if fs := validate(in); len(fs) > 0 {
		return nil, "", fmt.Errorf("%s: %s", fs[0].prop, fs[0].reason)
	}
	res, err := Generate(params(in))
	if err != nil {
		return nil, "", err
	}
	out["result"] = secret(resource.NewStringProperty(res))
	if typ == TypeString {
		return out, res, nil // upstream: a RandomString's id is its value
	}
	hash, err := bcryptHash(res)
	if err != nil {
		return nil, "", err
	}
	out["bcryptHash"] = secret(resource.NewStringProperty(hash))
	return out, passwordID, nil
}

// bcryptHash hashes the first 72 bytes: bcrypt ignores the rest anyway, and
// x/crypto refuses longer input rather than truncating.
func bcryptHash(s string) (string, error) {
	b := []byte(s)
	if len(b) > 72 {
		b = b[:72]
	}
	h, err := bcrypt.GenerateFromPassword(b, bcrypt.DefaultCost)
	return string(h), err
}

// Update only happens when nothing but secretness changed (all inputs
// replace): keep the generated values.
func (p *Provider) Update(_ context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	olds, err := props.Unmarshal(req.Olds)
	if err != nil {
		return nil, err
	}
	news, err := props.Unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	out := news.Copy()
	for _, k := range outputKeys {
		if v, ok := olds[resource.PropertyKey(k)]; ok {
			out[resource.PropertyKey(k)] = v
		}
	}
	s, err := props.Marshal(out)
	return &pulumirpc.UpdateResponse{Properties: s}, err
}

// Read returns the state as is: the value lives only in the state.
func (p *Provider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.Id, Properties: req.Properties, Inputs: req.Inputs}, nil
}

// Delete forgets the value; nothing exists outside the state.
func (p *Provider) Delete(context.Context, *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	return &emptypb.Empty{}, nil
}
