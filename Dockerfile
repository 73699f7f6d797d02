# syntax=docker/dockerfile:1
#
# edgeproxy as a static binary on distroless (CA certificates, a non-root
# user, no shell). Build:
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse --short HEAD) -t edgeproxy .
#
# Run (read-only root filesystem works: edgeproxy writes nothing to disk):
#
#   docker run --rm --read-only -p 8443:8443 edgeproxy
#
# configs/deploy_test.go runs this file's `go build` line with the same flags
# and checks that the binary is static and reports the stamped version.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=unknown
ARG TARGETOS=linux
ARG TARGETARCH=amd64
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false -ldflags "-s -w -X github.com/edgeproxy/edgeproxy/internal/buildinfo.Version=${VERSION} -X github.com/edgeproxy/edgeproxy/internal/buildinfo.Commit=${COMMIT}" -o /out/edgeproxy ./cmd/edgeproxy

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/edgeproxy /usr/local/bin/edgeproxy
# 65532 is distroless' "nonroot"; numeric, so Kubernetes' runAsNonRoot can
# verify it.
USER 65532:65532
# TLS listener, admin listener (/metrics, /healthz, /readyz: no
# authentication, publish it only on a private network).
EXPOSE 8443 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/edgeproxy", "healthcheck", "--url", "http://127.0.0.1:9090/healthz", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/edgeproxy"]
# The built-in demo app behind an in-memory certificate; give a config with
# `serve --config /etc/edgeproxy/edgeproxy.yaml` (mount it read-only).
CMD ["serve", "--listen", "0.0.0.0:8443", "--admin", "0.0.0.0:9090"]
