package command

import (
	"context"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"hft-deploy.local/plugins/internal/props"
)

// Check validates inputs and fills the connection defaults. Unsupported
// features are rejected here, so they fail at preview rather than mid-deploy.
func (p *Provider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	typ, err := typeOf(req.Urn)
	if err != nil {
		return nil, err
	}
	news, err := props.Unmarshal(req.News)
	if err != nil {
		return nil, err
	}
	var fails []*pulumirpc.CheckFailure
	fail := func(prop, format string, a ...any) {
		fails = append(fails, &pulumirpc.CheckFailure{Property: prop, Reason: fmt.Sprintf(format, a...)})
	}
	if l, ok := props.Str(news, "logging"); ok {
		switch l {
		case LogStdout, LogStderr, LogStdoutAndStderr, LogNone:
		default:
			fail("logging", "logging must be one of stdout, stderr, stdoutAndStderr, none; got %q", l)
		}
	}
	if typ == TypeRemote {
		cv, has := news["connection"]
		switch {
		case !has || cv.IsNull():
			fail("connection", "connection is required")
		case !cv.ContainsUnknowns():
			news["connection"] = connSecrets(connDefaults(cv))
			if c, err := parseConn(news["connection"]); err != nil {
				fail("connection", "%v", err)
			} else if c.HostKey != nil {
				// Upstream fails the same key at Create (ssh.ParseAuthorizedKey:
				// "" is "ssh: no key found"); failing here stops it at preview.
				if _, err := parseHostKey(*c.HostKey); err != nil {
					fail("connection", "%v", err)
				}
			}
		default:
			news["connection"] = connSecrets(cv)
		}
	} else {
		for _, k := range []string{"assetPaths", "archivePaths"} {
			if props.Has(news, k) {
				fail(k, "%s is not supported by this build of the command provider", k)
			}
		}
		if s, ok := props.Strs(news, "interpreter"); ok && len(s) == 0 && props.Known(news, "interpreter") {
			fail("interpreter", "interpreter must not be empty")
		}
	}
	if len(fails) > 0 {
		return &pulumirpc.CheckResponse{Failures: fails}, nil
	}
	inputs, err := props.Marshal(news)
	return &pulumirpc.CheckResponse{Inputs: inputs}, err
}

// outputKeys are provider-computed; they never count as input changes.
var outputKeys = []string{"stdout", "stderr", "assets", "archive"}

// Diff: a `triggers` change replaces (create-then-delete, as upstream), any
// other input change is an in-place update, otherwise nothing. As upstream, a
// change of secretness alone is a change (e.g. state written without the
// nested connection secrets shows `~ connection`).
func (p *Provider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, news, err := props.DiffInputs(req)
	if err != nil {
		return nil, err
	}
	return diff(olds, news), nil
}

func diff(olds, news resource.PropertyMap) *pulumirpc.DiffResponse {
	changed := props.ChangedWithSecrets(olds, news, outputKeys...)
	if len(changed) == 0 {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE, HasDetailedDiff: true}
	}
	resp := &pulumirpc.DiffResponse{
		Changes:         pulumirpc.DiffResponse_DIFF_SOME,
		Diffs:           changed,
		DetailedDiff:    map[string]*pulumirpc.PropertyDiff{},
		HasDetailedDiff: true,
	}
	for _, k := range changed {
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !props.Has(olds, k):
			kind = pulumirpc.PropertyDiff_ADD
		case !props.Has(news, k):
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if k == "triggers" {
			resp.Replaces = append(resp.Replaces, k)
			kind++ // in the enum each *_REPLACE kind directly follows its plain kind
		}
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	return resp
}
