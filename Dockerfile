# syntax=docker/dockerfile:1
# Not built in CI (no Docker engine there); the build steps match CI's: cargo build --locked.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock build.rs rustfmt.toml ./
COPY proto ./proto
# The manifest names these targets; cargo refuses a manifest whose targets are missing.
COPY benches ./benches
COPY examples ./examples
RUN mkdir -p src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo fetch --locked
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin apikeys

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 apikeys \
    && useradd --system --uid 10001 --gid apikeys --home-dir /data --shell /usr/sbin/nologin apikeys \
    && mkdir -p /data && chown apikeys:apikeys /data
COPY --from=build /src/target/release/apikeys /usr/local/bin/apikeys
USER apikeys:apikeys
WORKDIR /data
VOLUME ["/data"]
ENV APIKEYS_LISTEN=0.0.0.0:50051 \
    APIKEYS_CONSOLE_LISTEN=0.0.0.0:50052 \
    APIKEYS_DATA_DIR=/data
# gRPC, and the admin web console (set APIKEYS_CONSOLE=false to turn it off).
EXPOSE 50051 50052
# `apikeys health` exits 0 only when the server reports SERVING (the database answers). It talks to
# APIKEYS_SERVER (default http://127.0.0.1:50051); with TLS on, also set APIKEYS_SERVER=https://... and
# APIKEYS_CA_CERT (and APIKEYS_CLIENT_CERT / APIKEYS_CLIENT_KEY for mutual TLS).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/apikeys", "health", "--timeout-secs", "5"]
ENTRYPOINT ["/usr/local/bin/apikeys"]
CMD ["serve"]
