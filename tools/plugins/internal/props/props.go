// Package props holds the small PropertyMap helpers both providers share: the
// wire (un)marshalling options, typed getters that see through secrets, and the
// input comparison used by Diff.
package props

import (
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"sort"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"google.golang.org/protobuf/types/known/structpb"
)

// Opts keeps unknowns (previews) and secrets (so a secret input stays secret in
// the state) and drops nulls, as the engine expects from a provider.
var Opts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}

// Unmarshal decodes a gRPC struct; a nil struct is an empty map.
func Unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, Opts)
}

// Marshal encodes a property map for the engine.
// DiffInputs decodes a DiffRequest's old inputs (falling back to old state for resources
// created before the engine sent OldInputs) and new inputs, which every Diff compares.
func DiffInputs(req *pulumirpc.DiffRequest) (olds, news resource.PropertyMap, err error) {
	oldsStruct := req.OldInputs
	if oldsStruct == nil {
		oldsStruct = req.Olds
	}
	if olds, err = Unmarshal(oldsStruct); err != nil {
		return nil, nil, err
	}
	news, err = Unmarshal(req.News)
	return olds, news, err
}

func Marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, Opts)
}

// Plain strips secret wrappers recursively so values can be read and compared
// by content; secretness is tracked separately where it matters.
func Plain(v resource.PropertyValue) resource.PropertyValue {
	switch {
	case v.IsSecret():
		return Plain(v.SecretValue().Element)
	case v.IsArray():
		arr := make([]resource.PropertyValue, len(v.ArrayValue()))
		for i, e := range v.ArrayValue() {
			arr[i] = Plain(e)
		}
		return resource.NewArrayProperty(arr)
	case v.IsObject():
		return resource.NewObjectProperty(PlainMap(v.ObjectValue()))
	}
	return v
}

// PlainMap is Plain over every value of a map.
func PlainMap(m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range m {
		out[k] = Plain(v)
	}
	return out
}

// Str returns a known string property (secrets unwrapped); ok is false when it
// is absent, null, unknown or not a string.
func Str(m resource.PropertyMap, key string) (string, bool) {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsString() {
		return v.StringValue(), true
	}
	return "", false
}

// Bool returns a known bool property or def.
func Bool(m resource.PropertyMap, key string, def bool) bool {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsBool() {
		return v.BoolValue()
	}
	return def
}

// Num returns a known number property or def.
func Num(m resource.PropertyMap, key string, def float64) float64 {
	v := Plain(m[resource.PropertyKey(key)])
	if v.IsNumber() {
		return v.NumberValue()
	}
	return def
}

// StrMap returns a map of strings (e.g. `environment`), skipping non-strings.
func StrMap(m resource.PropertyMap, key string) map[string]string {
	v := Plain(m[resource.PropertyKey(key)])
	out := map[string]string{}
	if v.IsObject() {
		for k, e := range v.ObjectValue() {
			if e.IsString() {
				out[string(k)] = e.StringValue()
			}
		}
	}
	return out
}

// Strs returns an array of strings (e.g. `interpreter`), ok false if absent.
func Strs(m resource.PropertyMap, key string) ([]string, bool) {
	v := Plain(m[resource.PropertyKey(key)])
	if !v.IsArray() {
		return nil, false
	}
	var out []string
	for _, e := range v.ArrayValue() {
		if e.IsString() {
			out = append(out, e.StringValue())
		}
	}
	return out, true
}

// Has reports whether key holds a non-null value (known or not).
func Has(m resource.PropertyMap, key string) bool {
	v, ok := m[resource.PropertyKey(key)]
	return ok && !v.IsNull()
}

// Known reports whether key is absent or fully known (no unknowns inside).
func Known(m resource.PropertyMap, key string) bool {
	v, ok := m[resource.PropertyKey(key)]
	return !ok || !v.ContainsUnknowns()
}

// Changed lists the keys whose values differ between olds and news, ignoring
// the keys in skip and secretness (a bridged provider such as pulumi-random
// diffs plain values). An unknown new value counts as a change, because it may
// resolve to anything.
func Changed(olds, news resource.PropertyMap, skip ...string) []string {
	return changed(olds, news, Plain, skip)
}

// ChangedWithSecrets is Changed where secretness counts too, at any depth, as
// in the SDK's PropertyValue.DeepEquals that pulumi-command's diff relies on: a
// value that became secret (or stopped being secret) is a change.
func ChangedWithSecrets(olds, news resource.PropertyMap, skip ...string) []string {
	return changed(olds, news, func(v resource.PropertyValue) resource.PropertyValue { return v }, skip)
}

func changed(olds, news resource.PropertyMap, view func(resource.PropertyValue) resource.PropertyValue,
	skip []string,
) []string {
	skipSet := map[resource.PropertyKey]bool{}
	for _, s := range skip {
		skipSet[resource.PropertyKey(s)] = true
	}
	keys := map[resource.PropertyKey]bool{}
	for k := range olds {
		keys[k] = true
	}
	for k := range news {
		keys[k] = true
	}
	var out []string
	for k := range keys {
		if skipSet[k] {
			continue
		}
		o, n := view(olds[k]), view(news[k])
		if n.ContainsUnknowns() || !o.DeepEquals(n) {
			out = append(out, string(k))
		}
	}
	sort.Strings(out)
	return out
}
