# The host as a deployable image: a build stage makes the `host` binary and
# the plugin components; the runtime stage is a slim Debian with only them,
# the pipelines and the migrations, running as a non-root user.
#
#   docker build -t etl-host .
#   docker run --rm -e DATABASE_URL=... -e AWS_REGION=... etl-host run pipelines/logins.toml
#
# tests/it/deploy.rs checks that every file named here exists and that the
# runtime stage is what this says.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY rust-toolchain.toml Cargo.toml Cargo.lock rustfmt.toml ./
COPY .cargo .cargo
COPY wit wit
# The Python and JavaScript SDKs: `host plugins new --lang` copies them into a project.
COPY sdk sdk
COPY host host
COPY digests digests
COPY readers readers
COPY plugins plugins
COPY migrations migrations
COPY pipelines pipelines
COPY tests tests
COPY xtask xtask
RUN rustup target add wasm32-wasip2 && cargo xtask build

FROM debian:bookworm-slim AS runtime
# ca-certificates: system roots for TLS to PostgreSQL and AWS; curl: the
# healthcheck.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /opt/etl --shell /usr/sbin/nologin etl
COPY --from=build /src/target/release/host /usr/local/bin/host
COPY --from=build /src/target/plugins/ /opt/etl/plugins/
COPY pipelines /opt/etl/pipelines
COPY migrations /opt/etl/migrations
WORKDIR /opt/etl
RUN mkdir -p /opt/etl/cache && chown etl:etl /opt/etl/cache && chmod 700 /opt/etl/cache
ENV HOST_PLUGIN_PATH=/opt/etl/plugins \
    HOST_CACHE_DIR=/opt/etl/cache \
    HOST_LOG_FORMAT=json
USER etl
EXPOSE 9090
ENTRYPOINT ["host"]
CMD ["run", "--migrate", "pipelines/logins.toml", "--admin", "127.0.0.1:9090"]
