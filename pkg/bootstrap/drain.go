package bootstrap

import (
	"strconv"
	"time"
)

// DrainTime is how long Envoy drains the connections of a listener or filter chain that an
// update replaced or removed, before it closes them. A PeerAuthentication change to STRICT
// removes a workload's plaintext chains, so this is also how long a plaintext connection
// opened before the change can last. Istio's agent passes the same 45 s (Envoy's own default is
// 600 s). Only Envoy's command line can set it, not the bootstrap: DrainArgs are the flags,
// which the sidecar injector passes and `pilot bootstrap`'s help tells users to pass.
const DrainTime = 45 * time.Second

// DrainStrategy is Istio's: "immediate" tells every connection of a draining chain to close
// as soon as the drain starts (Connection: close on HTTP/1.1's next response, GOAWAY on
// HTTP/2), where Envoy's default "gradual" spreads that over the drain time. What does not
// close by itself is closed when DrainTime ends.
const DrainStrategy = "immediate"

// DrainArgs are the Envoy flags that set DrainTime and DrainStrategy.
func DrainArgs() []string {
	return []string{"--drain-time-s", strconv.Itoa(int(DrainTime / time.Second)), "--drain-strategy", DrainStrategy}
}
