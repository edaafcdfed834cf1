// greeter: a Go accept loop (the runtime makes its own system calls).
//
// Usage: greeter
//
// Listens on 127.0.0.1 (a free port, printed as "port=N"), greets each
// client with "hello" and keeps its connection open until the client
// closes it.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "greeter:", err)
		os.Exit(1)
	}
	fmt.Printf("port=%d\n", ln.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			c.Write([]byte("hello\n"))
			io.Copy(io.Discard, c)
		}(conn)
	}
}
