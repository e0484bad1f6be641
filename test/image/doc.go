// Package image checks the container image without a container engine: the Dockerfile's
// shape (multi-stage, distroless static nonroot, UID 65532, no shell) and, by running the
// very build command its build stage runs, that the binaries it ships (ha-injector and
// ha-sysctl, the injected init container's applier) are static; and that the image built
// without Docker (internal/image, `make image-tar`) agrees with the Dockerfile.
package image
