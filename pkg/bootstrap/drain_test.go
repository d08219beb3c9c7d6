package bootstrap

import (
	"slices"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// The test harness starts every Envoy the way pilot bootstrap's help says to, with the same
// drain flags as the sidecar injector, so the tests measure what users run.
func TestFrameworkStartsEnvoyWithDrainArgs(t *testing.T) {
	if !slices.Equal(framework.EnvoyDrainArgs, DrainArgs()) {
		t.Errorf("framework.EnvoyDrainArgs = %v, want bootstrap.DrainArgs() = %v", framework.EnvoyDrainArgs, DrainArgs())
	}
}
