// Command wasmop-registry is the embedded cluster's OCI distribution registry.
//
// It is CNCF distribution v3 (github.com/distribution/distribution/v3) with only the
// filesystem storage driver and the htpasswd and token access controllers linked in (the
// embedded cluster runs it without authentication; tests run ones with users and with a
// token service, as registries on real clusters have), started from one configuration
// file:
//
//	wasmop-registry <config.yml>
//
// Tracing stays off unless the caller asks for an exporter: distribution initialises
// OpenTelemetry's autoexport, whose default (OTLP to localhost:4318) would try to send
// every request's spans to a collector that does not exist here.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	if len(os.Args) != 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: wasmop-registry <config.yml>")
		os.Exit(2)
	}
	if os.Getenv("OTEL_TRACES_EXPORTER") == "" {
		_ = os.Setenv("OTEL_TRACES_EXPORTER", "none")
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintf(os.Stderr, "wasmop-registry: %v\n", err)
		os.Exit(1)
	}
}

func run(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	cfg, err := configuration.Parse(f)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	reg, err := registry.NewRegistry(context.Background(), cfg)
	if err != nil {
		return err
	}
	// With http.draintimeout set, ListenAndServe handles SIGTERM itself and drains.
	return reg.ListenAndServe()
}
