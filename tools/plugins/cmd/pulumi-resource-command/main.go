// Command pulumi-resource-command is the engine-launched plugin for the
// `command` package; see tools/plugins/README.md for why it exists.
package main

import (
	"fmt"
	"os"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"

	"hft-deploy.local/plugins/internal/command"
)

func main() {
	err := provider.Main("command", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		if host == nil {
			return command.New(nil), nil // attach mode: no engine to log to
		}
		return command.New(host), nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
