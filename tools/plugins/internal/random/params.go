package random

import (
	"fmt"
	"math"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"hft-deploy.local/plugins/internal/props"
)

// failure is a Check failure tied to one input property.
type failure struct{ prop, reason string }

// boolDefaults are the inputs that default to true.
var boolDefaults = []string{"lower", "upper", "special"}

// intDefaults are the inputs that default to 0.
var intDefaults = []string{"minLower", "minUpper", "minNumeric", "minSpecial"}

// applyDefaults fills defaults into known inputs and reconciles the deprecated
// `number` with `numeric`: whichever is set wins for both, as upstream.
func applyDefaults(m resource.PropertyMap) []failure {
	for _, k := range boolDefaults {
		if !props.Has(m, k) {
			m[resource.PropertyKey(k)] = resource.NewBoolProperty(true)
		}
	}
	for _, k := range intDefaults {
		if !props.Has(m, k) {
			m[resource.PropertyKey(k)] = resource.NewNumberProperty(0)
		}
	}
	num, hasNum := m["number"], props.Has(m, "number")
	nmc, hasNmc := m["numeric"], props.Has(m, "numeric")
	switch {
	case hasNum && hasNmc:
		if !num.ContainsUnknowns() && !nmc.ContainsUnknowns() && !props.Plain(num).DeepEquals(props.Plain(nmc)) {
			return []failure{{"number", "number and numeric are both set and disagree; use only numeric (number is deprecated)"}}
		}
	case hasNum:
		m["numeric"] = num
	case hasNmc:
		m["number"] = nmc
	default:
		m["number"], m["numeric"] = resource.NewBoolProperty(true), resource.NewBoolProperty(true)
	}
	return nil
}

// validate checks the known inputs; unknown ones are checked again at create.
func validate(m resource.PropertyMap) []failure {
	var fs []failure
	intProp := func(k string, lo float64) (int, bool) {
		v := props.Plain(m[resource.PropertyKey(k)])
		if v.IsComputed() || v.IsNull() {
			return 0, false
		}
		if !v.IsNumber() || v.NumberValue() != math.Trunc(v.NumberValue()) || v.NumberValue() < lo {
			fs = append(fs, failure{k, fmt.Sprintf("%s must be an integer >= %v, got %v", k, lo, v)})
			return 0, false
		}
		return int(v.NumberValue()), true
	}
	if !props.Has(m, "length") {
		return []failure{{"length", "length is required"}}
	}
	length, okLen := intProp("length", 1)
	sum, allKnown := 0, true
	for _, k := range intDefaults {
		n, ok := intProp(k, 0)
		sum += n
		allKnown = allKnown && ok
	}
	if okLen && allKnown && sum > length {
		fs = append(fs, failure{"length", fmt.Sprintf(
			"length (%d) must be at least the sum of minLower, minUpper, minNumeric and minSpecial (%d)", length, sum)})
	}
	if okLen && allKnown && length > sum && classesKnown(m) && params(m).pool() == "" {
		fs = append(fs, failure{"lower", "at least one of lower, upper, numeric or special must be true"})
	}
	return fs
}

// params reads fully known, validated inputs.
func params(m resource.PropertyMap) Params {
	p := Params{
		Length:     int(props.Num(m, "length", 0)),
		Upper:      props.Bool(m, "upper", true),
		Lower:      props.Bool(m, "lower", true),
		Numeric:    props.Bool(m, "numeric", props.Bool(m, "number", true)),
		Special:    props.Bool(m, "special", true),
		MinUpper:   int(props.Num(m, "minUpper", 0)),
		MinLower:   int(props.Num(m, "minLower", 0)),
		MinNumeric: int(props.Num(m, "minNumeric", 0)),
		MinSpecial: int(props.Num(m, "minSpecial", 0)),
	}
	p.OverrideSpecial, _ = props.Str(m, "overrideSpecial")
	return p
}

func classesKnown(m resource.PropertyMap) bool {
	for _, k := range []string{"lower", "upper", "numeric", "special", "overrideSpecial"} {
		if !props.Known(m, k) {
			return false
		}
	}
	return true
}
