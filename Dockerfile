# syntax=docker/dockerfile:1
#
# shardvisor's image: one static binary on distroless/static (CA
# certificates, /etc/passwd with nonroot, tzdata; no shell), run as
# nonroot (65532). The supervisor is PID 1: it handles SIGTERM (graceful
# stop), SIGHUP (rolling restart) and reaps orphans itself (-reap-orphans
# auto); no tini needed.
#
#   docker build -t shardvisor .            (or: make image)
#   docker run -d --name bot --secret ... (see deploy/README.md)
#
# The build stage runs on the build machine's platform and cross-compiles
# for the target (GOOS/GOARCH from buildx's TARGETOS/TARGETARCH): a
# multi-platform build needs no emulation.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/shardvisor/shardvisor/internal/buildinfo.Version=${VERSION}" \
      -o /out/shardvisor ./cmd/shardvisor
# The mount point of the session dir (SHARDVISOR_SESSION_DIR, set by the
# compose file and the StatefulSet with a volume there): a named volume
# takes its owner and mode from the image.
RUN install -d -m 0700 /out/sessions

FROM gcr.io/distroless/static-debian13:nonroot
COPY --from=build /out/shardvisor /usr/local/bin/shardvisor
COPY --from=build --chown=65532:65532 /out/sessions /var/lib/shardvisor/sessions
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# In a container the metrics, health and status endpoints listen on every
# interface (Prometheus and the orchestrator's probes come from outside);
# `shardvisor healthcheck` asks the same port on 127.0.0.1, following
# SHARDVISOR_METRICS_ADDR if it is changed.
# The shutdown timeout fits docker stop's default 10 s grace period; give
# more with --stop-timeout / stop_grace_period / terminationGracePeriodSeconds
# and raise it with them. JSON logs for the log collector.
ENV SHARDVISOR_METRICS_ADDR=0.0.0.0:9851 \
    SHARDVISOR_SHUTDOWN_TIMEOUT=8s \
    SHARDVISOR_LOG_FORMAT=json
EXPOSE 9851
STOPSIGNAL SIGTERM
# Healthy = every cluster ready (/readyz). The start period covers a first
# start paced at one IDENTIFY per 5 s per bucket; raise it for big bots.
HEALTHCHECK --interval=30s --timeout=10s --start-period=5m --retries=3 \
    CMD ["/usr/local/bin/shardvisor", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/shardvisor"]
CMD ["run"]
