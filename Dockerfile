# The Engine and vllm-sim in one image.
#   docker build -t engine .
#   docker run --rm -p 8000:8000 -e VLLM_URL=http://vllm-host:8000 engine
# Build stage: Swift toolchain + Debian's -dev packages (the same list scripts/setup.sh installs).
# Runtime stage: debian:bookworm-slim with the matching runtime libraries and the Swift runtime
# copied from the build image. Not built in CI (no Docker engine there); see docs/operations.md.
#
# The default toolchain is the one CI builds and tests with: Swift 6.3.1 (.ci/run on Debian 12, the
# toolchain at /opt/swift, as the README says); keep the two in step. The package needs Swift 6.0
# or later; another bookworm-based tag can be picked with
#   docker build --build-arg SWIFT_IMAGE=swift:6.2-bookworm .
# The runtime stage must stay on Debian 12 (bookworm) to match the build image's libraries.

ARG SWIFT_IMAGE=swift:6.3.1-bookworm

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libevent-dev libhiredis-dev libyaml-dev libhttp-parser-dev libjansson-dev libsimdjson-dev nettle-dev libzmq3-dev libmsgpack-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that source edits do not refetch them. Package.resolved is optional
# (it is not tracked in git); the glob matches Package.swift in any case.
COPY Package.* ./
RUN swift package resolve
COPY Sources ./Sources
# SwiftPM checks every declared target's directory, test targets included.
COPY Tests ./Tests
RUN swift build -c release --static-swift-stdlib --product engine-server \
    && swift build -c release --static-swift-stdlib --product vllm-sim \
    && mkdir -p /out \
    && cp "$(swift build -c release --show-bin-path)/engine-server" \
          "$(swift build -c release --show-bin-path)/vllm-sim" /out/

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libevent-core-2.1-7 libhiredis0.14 libyaml-0-2 libhttp-parser2.9 libjansson4 libsimdjson14 libnettle8 libzmq5 libmsgpackc2 \
        libstdc++6 curl redis-server \
    && rm -rf /var/lib/apt/lists/*
# No Swift runtime here: both binaries link it statically (--static-swift-stdlib), which also keeps
# each process's resident memory ~4 MB smaller than with the shared libswiftCore and Foundation.
COPY --from=build /out/engine-server /out/vllm-sim /usr/local/bin/
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin engine
WORKDIR /app
COPY configs ./configs
USER engine
EXPOSE 8000
# /health answers 200 once at least one backend passed its health check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8000/health || exit 1
# No ENTRYPOINT: the same image runs `vllm-sim …` when given that command.
# server.workers is 0 (one worker per online CPU, as the kernel reports them, which ignores
# container CPU limits); pass --workers N to match the container's CPU quota. With more than one
# worker and no REDIS_URL the workers share a private redis-server (installed above) on a Unix
# socket under /tmp.
CMD ["engine-server", "--config", "/app/configs/default.yaml"]
