// goclient: a DM-like Go TLS client for the tests. It dials ADDR with a
// client certificate, writes a request at once (as gRPC does after the
// handshake), reads the answer and prints the first error it meets, so a
// test can read what a Go program would log.
//
// Usage: goclient ADDR CA CERT KEY SERVERNAME [UPLOAD]
// With UPLOAD, it first writes that many bytes (an upload, or a long
// request), then reads.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 6 && len(os.Args) != 7 {
		fmt.Fprintln(os.Stderr, "usage: goclient ADDR CA CERT KEY SERVERNAME [UPLOAD]")
		os.Exit(2)
	}
	upload := 0
	if len(os.Args) == 7 {
		upload, _ = strconv.Atoi(os.Args[6])
	}
	addr, caFile, certFile, keyFile, name := os.Args[1], os.Args[2], os.Args[3], os.Args[4], os.Args[5]
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Println("setup:", err)
		os.Exit(2)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		fmt.Println("setup:", err)
		os.Exit(2)
	}
	conf := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert},
		ServerName: name, NextProtos: []string{"h2"}}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, upload)); err != nil {
		fmt.Println("write:", err)
		os.Exit(1)
	}
	if _, err := c.Write([]byte("PING\n")); err != nil {
		fmt.Println("write:", err)
		os.Exit(1)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(c, buf, 5)
	if err != nil {
		fmt.Println("read:", err)
		os.Exit(1)
	}
	fmt.Printf("ok: %q\n", buf[:n])
}
