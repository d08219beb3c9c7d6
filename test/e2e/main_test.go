package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/skiffmesh/skiff/test/framework"
)

// TestMain asserts once, over the whole suite, what each test also checks for its own Envoys:
// no Envoy rejected any configuration pilot sent it.
func TestMain(m *testing.M) {
	code := m.Run()
	checked, rejecting := framework.SuiteRejections()
	fmt.Printf("zero-NACK check: %d Envoys checked, %d rejected an xDS update\n", checked, rejecting)
	if rejecting > 0 && code == 0 {
		code = 1
	}
	os.Exit(code)
}
