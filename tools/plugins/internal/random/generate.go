// Package random is a stand-in for pulumi-random 4.21.4's RandomPassword and
// RandomString: same tokens, property names, character sets and generation
// rules as terraform-provider-random, which pulumi-random bridges.
package random

import (
	"crypto/rand"
	"errors"
	"math/big"
)

// Character classes of terraform-provider-random.
const (
	NumChars       = "0123456789"
	LowerChars     = "abcdefghijklmnopqrstuvwxyz"
	UpperChars     = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	DefaultSpecial = "!@#$%&*()-_=+[]{}<>:?"
)

// Params are the validated generation inputs.
type Params struct {
	Length                                     int
	Upper, Lower, Numeric, Special             bool
	MinUpper, MinLower, MinNumeric, MinSpecial int
	OverrideSpecial                            string // empty: DefaultSpecial, as upstream
}

func (p Params) special() string {
	if p.OverrideSpecial != "" {
		return p.OverrideSpecial
	}
	return DefaultSpecial
}

// Generate follows terraform-provider-random: first the min* characters of
// each class (even a disabled one, as upstream), then the rest from the union
// of enabled classes, then a shuffle. Everything comes from crypto/rand; the
// shuffle is an unbiased Fisher-Yates rather than upstream's sort by random key.
func Generate(p Params) (string, error) {
	pool := p.pool()
	out := make([]byte, 0, p.Length)
	for _, m := range []struct {
		set string
		n   int
	}{{NumChars, p.MinNumeric}, {LowerChars, p.MinLower}, {UpperChars, p.MinUpper}, {p.special(), p.MinSpecial}} {
		b, err := pick(m.set, m.n)
		if err != nil {
			return "", err
		}
		out = append(out, b...)
	}
	if rest := p.Length - len(out); rest > 0 {
		b, err := pick(pool, rest)
		if err != nil {
			return "", err
		}
		out = append(out, b...)
	}
	for i := len(out) - 1; i > 0; i-- {
		j, err := randInt(i + 1)
		if err != nil {
			return "", err
		}
		out[i], out[j] = out[j], out[i]
	}
	return string(out), nil
}

// pool is the union of the enabled classes.
func (p Params) pool() string {
	var pool string
	if p.Upper {
		pool += UpperChars
	}
	if p.Lower {
		pool += LowerChars
	}
	if p.Numeric {
		pool += NumChars
	}
	if p.Special {
		pool += p.special()
	}
	return pool
}

// pick draws n characters uniformly from set.
func pick(set string, n int) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	if set == "" {
		return nil, errors.New("no characters to choose from: enable lower, upper, numeric or special")
	}
	b := make([]byte, n)
	for i := range b {
		j, err := randInt(len(set))
		if err != nil {
			return nil, err
		}
		b[i] = set[j]
	}
	return b, nil
}

func randInt(n int) (int, error) {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0, err
	}
	return int(v.Int64()), nil
}
