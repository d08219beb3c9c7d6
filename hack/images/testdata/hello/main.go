// Command hello is a tiny program the image tests package quickly: it prints a greeting, and
// its usage (exit 0) for -help.
package main

import (
	"flag"
	"fmt"
)

func main() {
	who := flag.String("who", "skiff", "who to greet")
	flag.Parse()
	fmt.Printf("hello, %s\n", *who)
}
