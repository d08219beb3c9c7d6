// Command etcd is etcd's own server entry point (go.etcd.io/etcd/server/v3
// etcdmain), built from the module proxy at the version Kubernetes pins, so
// the test cluster needs no release download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
