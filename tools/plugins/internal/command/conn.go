package command

import (
	"fmt"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"

	"hft-deploy.local/plugins/internal/props"
)

// Conn is the `connection` input of command:remote:Command (pulumi-command 1.x
// wire names), after defaults.
//
// The optional strings are pointers because upstream tells "absent" from ""
// apart: a present "" hostKey or privateKey is a parse error, a present ""
// agentSocketPath is dialled (and fails), a present "" password is sent.
type Conn struct {
	Host               string
	Port               int
	User               string
	Password           *string
	PrivateKey         *string
	PrivateKeyPassword *string
	AgentSocketPath    *string       // absent: $SSH_AUTH_SOCK when that is non-empty
	HostKey            *string       // authorized_keys line; absent accepts any key
	DialErrorLimit     int           // -1: unlimited
	PerDialTimeout     time.Duration // 0: no limit; bounds the TCP connect only
}

// Connection defaults, the same as the Python SDK's ConnectionArgs fills in.
const (
	defaultPort           = 22
	defaultUser           = "root"
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15
)

// connDefaults fills the defaults into a known connection object; secrets and
// unknowns are left as they are (the Python SDK sends connection as a secret).
func connDefaults(v resource.PropertyValue) resource.PropertyValue {
	if v.IsSecret() {
		return resource.MakeSecret(connDefaults(v.SecretValue().Element))
	}
	if !v.IsObject() {
		return v
	}
	m := v.ObjectValue().Copy()
	set := func(k string, d resource.PropertyValue) {
		if !props.Has(m, k) {
			m[resource.PropertyKey(k)] = d
		}
	}
	set("port", resource.NewNumberProperty(defaultPort))
	set("user", resource.NewStringProperty(defaultUser))
	set("dialErrorLimit", resource.NewNumberProperty(defaultDialErrorLimit))
	set("perDialTimeout", resource.NewNumberProperty(defaultPerDialTimeout))
	return resource.NewObjectProperty(m)
}

// parseConn reads a known connection; unsupported options fail loudly rather
// than being silently ignored.
func parseConn(v resource.PropertyValue) (Conn, error) {
	v = props.Plain(v)
	if !v.IsObject() {
		return Conn{}, fmt.Errorf("connection: must be an object")
	}
	m := v.ObjectValue()
	if props.Has(m, "proxy") {
		return Conn{}, fmt.Errorf("connection.proxy: bastion proxies are not supported by this build of the command provider")
	}
	c := Conn{
		Port:           int(props.Num(m, "port", defaultPort)),
		User:           defaultUser,
		DialErrorLimit: int(props.Num(m, "dialErrorLimit", defaultDialErrorLimit)),
		PerDialTimeout: time.Duration(props.Num(m, "perDialTimeout", defaultPerDialTimeout) * float64(time.Second)),
	}
	var ok bool
	if c.Host, ok = props.Str(m, "host"); !ok || c.Host == "" {
		return Conn{}, fmt.Errorf("connection.host: required")
	}
	if u, ok := props.Str(m, "user"); ok && u != "" {
		c.User = u
	}
	c.Password = optStr(m, "password")
	c.PrivateKey = optStr(m, "privateKey")
	c.PrivateKeyPassword = optStr(m, "privateKeyPassword")
	c.AgentSocketPath = optStr(m, "agentSocketPath")
	c.HostKey = optStr(m, "hostKey")
	return c, nil
}

// optStr is a present string property (even ""), or nil when absent or null.
func optStr(m resource.PropertyMap, key string) *string {
	if s, ok := props.Str(m, key); ok {
		return &s
	}
	return nil
}

// secretConnKeys are the connection fields upstream declares secret
// (`provider:"secret"`): its Check returns them as nested secrets inside the
// connection object, and so must ours, or a state written here shows
// `~ connection` (and re-runs every command) the first time upstream reads it.
var secretConnKeys = []resource.PropertyKey{"password", "privateKey", "privateKeyPassword"}

// connSecrets marks secretConnKeys secret inside a connection value, keeping
// any outer secret wrapper (the Python SDK sends the whole object as secret).
func connSecrets(v resource.PropertyValue) resource.PropertyValue {
	if v.IsSecret() {
		return resource.MakeSecret(connSecrets(v.SecretValue().Element))
	}
	if !v.IsObject() {
		return v
	}
	m := v.ObjectValue().Copy()
	for _, k := range secretConnKeys {
		if e, ok := m[k]; ok && !e.IsNull() && !e.IsSecret() {
			m[k] = resource.MakeSecret(e)
		}
	}
	return resource.NewObjectProperty(m)
}
