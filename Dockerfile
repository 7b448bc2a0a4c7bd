# syntax=docker/dockerfile:1
# llmq's binaries in one image: gateway-worker, submitter (the CLI), llmq-edge (the HTTP
# edge) and mock-provider (for the compose file's demo profile). The compose file picks the
# binary per service with `command:`.
#
# Stage 1 builds the dependencies from the manifests and empty sources, so that layer is
# cached until Cargo.toml or Cargo.lock change; stage 2 builds llmq itself; the runtime
# is debian:bookworm-slim with a non-root user.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
ENV CARGO_TERM_COLOR=never
# The dependency layer: manifests, and a stub for every target they name.
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY schemas/Cargo.toml schemas/
COPY runtime/Cargo.toml runtime/
COPY gateway-worker/Cargo.toml gateway-worker/
COPY submitter/Cargo.toml submitter/
COPY edge/Cargo.toml edge/
COPY tests/Cargo.toml tests/
RUN set -eu; \
    for crate in schemas runtime gateway-worker submitter edge tests; do \
      mkdir -p "$crate/src" && echo '' > "$crate/src/lib.rs"; \
    done; \
    for bin in gateway-worker/src/main.rs submitter/src/main.rs edge/src/main.rs \
               tests/src/bin/mock-provider.rs tests/src/bin/bench.rs tests/it/main.rs; do \
      mkdir -p "$(dirname "$bin")" && echo 'fn main() {}' > "$bin"; \
    done; \
    cargo build --release --locked \
      --bin gateway-worker --bin submitter --bin llmq-edge --bin mock-provider; \
    rm -rf schemas/src runtime/src gateway-worker/src submitter/src edge/src tests/src tests/it
# llmq itself.
COPY schemas schemas
COPY runtime runtime
COPY gateway-worker gateway-worker
COPY submitter submitter
COPY edge edge
COPY tests tests
# Touch the sources so cargo rebuilds them over the stubs (COPY keeps the host's mtimes).
RUN find schemas runtime gateway-worker submitter edge tests -name '*.rs' -exec touch {} + && \
    cargo build --release --locked \
      --bin gateway-worker --bin submitter --bin llmq-edge --bin mock-provider && \
    mkdir -p /out && \
    cp target/release/gateway-worker target/release/submitter target/release/llmq-edge \
       target/release/mock-provider /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to the providers; curl: the healthchecks.
RUN apt-get update && \
    apt-get install -y --no-install-recommends ca-certificates curl && \
    rm -rf /var/lib/apt/lists/* && \
    useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin llmq
COPY --from=build /out/ /usr/local/bin/
USER llmq:llmq
# The worker's admin port (/metrics, /healthz, /readyz); the edge's port.
EXPOSE 9464 8080
# The worker's readiness by default; compose sets each service's own healthcheck.
ENV LLMQ_HEALTH_URL=http://127.0.0.1:9464/readyz
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS -o /dev/null "$LLMQ_HEALTH_URL" || exit 1
CMD ["gateway-worker", "--config", "/etc/llmq/worker.toml"]
