// Command pulumi-language-python is hft-deploy's Python language host for the Pulumi engine.
//
// Why it exists: the upstream host (module
// github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) has no tags and the Go
// module proxy reachable here refuses every pseudo-version of it, so it cannot be built from
// source on these machines. This host implements the part of the LanguageRuntime protocol
// that `pulumi preview/up/destroy` use, and runs programs exactly as upstream does: through
// `pulumi-language-python-exec` from the Pulumi SDK module (v3.274.1), with the interpreter of
// the virtualenv named in Pulumi.yaml. An upstream host earlier on PATH replaces it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is set with -ldflags "-X main.version=..." to the Pulumi version it was built against.
var version = "3.274.1"

// bailExitCode is what pulumi-language-python-exec returns after it has shown the user an
// actionable message; the engine then stops without printing a second error.
const bailExitCode = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execScript    string
}

func main() {
	flag.Parse()
	args := flag.Args()
	if len(args) < 1 {
		cmdutil.Exit(errors.New("missing required engine RPC address argument"))
	}
	self, err := os.Executable()
	if err != nil {
		cmdutil.Exit(err)
	}
	h := &host{
		engineAddress: args[0],
		execScript:    filepath.Join(filepath.Dir(self), "pulumi-language-python-exec"),
	}
	if _, err := os.Stat(h.execScript); err != nil {
		cmdutil.Exit(fmt.Errorf("pulumi-language-python-exec must sit beside this host: %w", err))
	}
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	// The engine reads the port from our first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

func (h *host) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.EngineAddress != "" {
		h.engineAddress = req.EngineAddress
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

// virtualenv returns the absolute virtualenv directory named by the `virtualenv` runtime
// option of Pulumi.yaml (relative to the project root), or "" when none is configured.
func virtualenv(info *pulumirpc.ProgramInfo) string {
	if info == nil || info.Options == nil {
		return ""
	}
	v, ok := info.Options.AsMap()["virtualenv"].(string)
	if !ok || v == "" {
		return ""
	}
	if filepath.IsAbs(v) {
		return v
	}
	return filepath.Join(info.RootDirectory, v)
}

// python finds the interpreter: the virtualenv's when configured (and it must then exist),
// otherwise python3 from PATH.
func python(info *pulumirpc.ProgramInfo) (string, error) {
	if venv := virtualenv(info); venv != "" {
		p := filepath.Join(venv, "bin", "python")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("the virtualenv %s named in Pulumi.yaml does not exist or has no bin/python; "+
				"create it with `make venv`", venv)
		}
		return p, nil
	}
	return exec.LookPath("python3")
}

// pluginManifest is the pulumi-plugin.json each Pulumi provider SDK ships in its package.
type pluginManifest struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
}

// requiredPackages lists the provider plugins of the SDKs installed in the virtualenv, so that
// the engine checks they exist before the program starts (a missing one fails at once).
func requiredPackages(info *pulumirpc.ProgramInfo) ([]*pulumirpc.PackageDependency, error) {
	venv := virtualenv(info)
	if venv == "" {
		return nil, nil
	}
	var deps []*pulumirpc.PackageDependency
	manifests, _ := filepath.Glob(filepath.Join(venv, "lib", "python3*", "site-packages", "*", "pulumi-plugin.json"))
	for _, path := range manifests {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var m pluginManifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !m.Resource || m.Name == "" {
			continue
		}
		deps = append(deps, &pulumirpc.PackageDependency{Kind: "resource", Name: m.Name, Version: m.Version})
	}
	return deps, nil
}

func (h *host) GetRequiredPackages(
	_ context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	deps, err := requiredPackages(req.Info)
	return &pulumirpc.GetRequiredPackagesResponse{Packages: deps}, err
}

func (h *host) GetRequiredPlugins(
	_ context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	deps, err := requiredPackages(req.Info)
	plugins := make([]*pulumirpc.PluginDependency, 0, len(deps))
	for _, d := range deps {
		plugins = append(plugins, &pulumirpc.PluginDependency{Kind: d.Kind, Name: d.Name, Version: d.Version})
	}
	return &pulumirpc.GetRequiredPluginsResponse{Plugins: plugins}, err
}

func (h *host) GetProgramDependencies(
	context.Context, *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

func (h *host) About(_ context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	py, err := python(req.Info)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(py, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", py, err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "Python ")
	return &pulumirpc.AboutResponse{Executable: py, Version: v}, nil
}

// InstallDependencies only checks: hft-deploy's virtualenv is created by `make venv` from a
// pinned requirements file, never by the engine behind the operator's back.
func (h *host) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest,
	srv grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	if _, err := python(req.Info); err != nil {
		return err
	}
	return srv.Send(&pulumirpc.InstallDependenciesResponse{Stdout: []byte("virtualenv present (managed by make venv)\n")})
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	py, err := python(req.Info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	program := req.Program
	if req.Info != nil {
		program = filepath.Join(req.Info.ProgramDirectory, req.Info.EntryPoint)
	}
	args := []string{"-u", h.execScript,
		"--monitor", req.MonitorAddress, "--engine", h.engineAddress,
		"--project", req.Project, "--stack", req.Stack, "--pwd", req.Pwd,
		"--dry_run", strconv.FormatBool(req.DryRun), "--parallel", strconv.Itoa(int(req.Parallel)),
	}
	if req.Organization != "" {
		args = append(args, "--organization", req.Organization)
	}
	if req.Info != nil && req.Info.RootDirectory != "" {
		args = append(args, "--root_directory", req.Info.RootDirectory)
	}
	args = append(append(args, program), req.Args...)

	env, err := programEnv(req)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// programEnv passes config the way the Python SDK reads it (PULUMI_CONFIG and
// PULUMI_CONFIG_SECRET_KEYS, both JSON) and puts the virtualenv first on PATH, so that
// dynamic providers launched from the program use the same interpreter.
func programEnv(req *pulumirpc.RunRequest) ([]string, error) {
	config := req.Config
	if config == nil {
		config = map[string]string{} // the exec script iterates it: never "null"
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	secretKeys := req.ConfigSecretKeys
	if secretKeys == nil {
		secretKeys = []string{}
	}
	keys, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	env := append(os.Environ(), "PULUMI_CONFIG="+string(cfg), "PULUMI_CONFIG_SECRET_KEYS="+string(keys))
	if venv := virtualenv(req.Info); venv != "" {
		env = append(env, "VIRTUAL_ENV="+venv, "PATH="+filepath.Join(venv, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	return env, nil
}
