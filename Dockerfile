# syntax=docker/dockerfile:1
# Build: the same static build as `make build` (CGO off, -trimpath).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version is the chart's appVersion, as for `make build` outside Docker.
RUN make build

# Run: no shell, no package manager, non-root (the init container that runs /ha-sysctl
# sets its own user).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/ha-injector /ha-injector
# The applier of the injected ha-sysctl init container: /ha-sysctl NAME=VALUE ...
COPY --from=build /src/bin/ha-sysctl /ha-sysctl
USER 65532:65532
EXPOSE 9443 8080 8081
ENTRYPOINT ["/ha-injector"]
CMD ["serve"]
