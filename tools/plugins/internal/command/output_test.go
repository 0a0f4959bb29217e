package command

import (
	"errors"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// TestLongLineFailsWhereUpstreamHangs: upstream's log reader (a bufio.Scanner
// over the logged streams) stops at a 64 KiB line and the command then hangs;
// we stop the command with a clear error instead, on the streams upstream
// logs (secret inputs or not), and let shorter lines and unlogged streams be.
func TestLongLineFailsWhereUpstreamHangs(t *testing.T) {
	long := "head -c 70000 /dev/zero | tr '\\0' a; echo; echo after" // one 70000-byte line
	edge := "head -c 65535 /dev/zero | tr '\\0' a; echo"             // the longest line upstream reads
	cases := []struct {
		name, cmd, logging string
		stdin              resource.PropertyValue
		fail               bool
	}{
		{"long stdout line, logged", long, LogStdoutAndStderr, str(""), true},
		{"long stdout line, logged, secret stdin (upstream streams it too)", long, LogStdout,
			resource.MakeSecret(str("x")), true},
		{"long stderr line, logged", "{ " + long + "; } >&2", LogStderr, str(""), true},
		{"long line split across stdout and stderr (one pipe upstream)",
			"head -c 40000 /dev/zero | tr '\\0' a; head -c 40000 /dev/zero | tr '\\0' b >&2; echo",
			LogStdoutAndStderr, str(""), true},
		{"long stdout line, only stderr logged", long, LogStderr, str(""), false},
		{"long stdout line, logging none", long, LogNone, str(""), false},
		{"65535-byte line, logged", edge, LogStdoutAndStderr, str(""), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := create(t, localURN, resource.PropertyMap{
				"create": str(c.cmd), "logging": str(c.logging), "stdin": c.stdin})
			var ll *longLineError
			if c.fail != errors.As(err, &ll) {
				t.Fatalf("fail=%v, got %v", c.fail, err)
			}
			if c.fail && !strings.Contains(err.Error(), "hangs forever") {
				t.Fatalf("error must say upstream would hang: %v", err)
			}
			if !c.fail && err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestErrorTextWithSecretStdin pins what upstream's error carries when stdin
// is secret: never stdin itself, but the whole command text and all output,
// so whatever a script prints from its stdin is in the error.
func TestErrorTextWithSecretStdin(t *testing.T) {
	_, err := create(t, localURN, resource.PropertyMap{
		"create": str("read tok; echo \"using ${#tok} chars\"; exit 4"),
		"stdin":  resource.MakeSecret(str("hunter2")), "logging": str(LogNone)})
	want := "exit status 4: running \"read tok; echo \\\"using ${#tok} chars\\\"; exit 4\":\nusing 7 chars\n"
	if err == nil || err.Error() != want {
		t.Fatalf("want %q, got %v", want, err)
	}
	_, err = create(t, localURN, resource.PropertyMap{
		"create": str("cat; exit 4"), "stdin": resource.MakeSecret(str("hunter2"))})
	if err == nil || !strings.HasSuffix(err.Error(), ":\nhunter2") {
		t.Fatalf("output echoing the secret stdin is in the error, as upstream: got %v", err)
	}
}

func TestLongLineRemote(t *testing.T) {
	s := startServer(t)
	_, err := create(t, remoteURN, resource.PropertyMap{"connection": s.conn(nil),
		"create": str("head -c 70000 /dev/zero | tr '\\0' a; echo")})
	var ll *longLineError
	if !errors.As(err, &ll) {
		t.Fatalf("want the long-line error over SSH too, got %v", err)
	}
}
