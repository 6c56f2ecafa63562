# outpost-gateway as a container image (docs/install.md, "The gateway container").
#
#   podman build --format docker -f deploy/gateway.Dockerfile -t outpost-gateway .
#   (--target agent: the agent, for deploy/compose.yaml)
#   podman run -d -p 7443:7443 -p 9090:9090 \
#     -v ./certs:/etc/outpost/certs:ro -v outpost-events:/var/lib/outpost-gateway \
#     outpost-gateway
#
# Stage 1 builds the gateway and its Debian package on debian:bookworm; stage 2 installs
# that package on debian:bookworm-slim, which brings exactly the runtime libraries it
# depends on. The gateway runs as the unprivileged user 10001; configuration and
# certificates are mounted (/etc/outpost/gateway.toml, /etc/outpost/certs/{ca,gateway}.*).
# SIGTERM (podman stop, a rolling update) finishes and acknowledges the batches in flight,
# flushes the sink and exits 0 within gateway.shutdown_grace (20 s by default).

FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config ccache file dpkg-dev protobuf-compiler \
      libprotobuf-dev libsqlite3-dev libzstd-dev libmbedtls-dev libboost-dev \
      libboost-system-dev libpaho-mqttpp-dev libpaho-mqtt-dev libssl-dev librdkafka-dev \
      libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The ccache cache mount makes rebuilds after a small change quick; without it, a full build.
RUN --mount=type=cache,target=/root/.cache/ccache \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DOUTPOST_BUILD_TESTS=OFF \
      -DOUTPOST_BUILD_BENCH=OFF -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null \
 && cmake --build /build --target outpost-gateway \
 && cd /build && cpack -G DEB -D CPACK_COMPONENTS_ALL=gateway >/dev/null \
 && cp packages/outpost-gateway_*.deb /outpost-gateway.deb

# The agent's package too, for deploy/compose.yaml's agent (`--target agent`).
FROM build AS build-agent
RUN --mount=type=cache,target=/root/.cache/ccache \
    cmake --build /build --target outpost-agent \
 && cd /build && cpack -G DEB -D CPACK_COMPONENTS_ALL=agent >/dev/null \
 && cp packages/outpost-agent_*.deb /outpost-agent.deb

FROM debian:bookworm-slim AS agent
RUN groupadd --system --gid 10001 outpost \
 && useradd --system --uid 10001 --gid outpost --home-dir /var/lib/outpost \
      --no-create-home --shell /usr/sbin/nologin outpost
COPY --from=build-agent /outpost-agent.deb /tmp/
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/outpost-agent.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/outpost-agent.deb
VOLUME /var/lib/outpost
USER 10001:10001
ENTRYPOINT ["/usr/bin/outpost-agent", "run", "--config", "/etc/outpost/agent.toml"]

# The default target: the gateway.
FROM debian:bookworm-slim AS gateway
# A fixed uid, so that Kubernetes can check runAsNonRoot and volumes can be prepared for it;
# the package's postinst finds the user already there.
RUN groupadd --system --gid 10001 outpost-gateway \
 && useradd --system --uid 10001 --gid outpost-gateway --home-dir /var/lib/outpost-gateway \
      --no-create-home --shell /usr/sbin/nologin outpost-gateway
COPY --from=build /outpost-gateway.deb /tmp/
RUN apt-get update \
 && apt-get install -y --no-install-recommends /tmp/outpost-gateway.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/outpost-gateway.deb \
 && install -d -o outpost-gateway -g outpost-gateway -m 0750 /var/lib/outpost-gateway/events
VOLUME /var/lib/outpost-gateway
USER 10001:10001
EXPOSE 7443 9090
# /healthz on the plain-HTTP port, with bash alone (no curl in the image).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9090 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/outpost-gateway", "--config", "/etc/outpost/gateway.toml"]
# Probes reach the HTTP port from outside the container.
CMD ["--set", "gateway.http_listen=0.0.0.0:9090"]
