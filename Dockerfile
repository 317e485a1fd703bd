# sieve container image: a static-ish release build on Debian, run as an unprivileged user.
#
#   docker build -t sieve .
#   docker run --rm -v $PWD/my.yaml:/etc/sieve/config.yaml sieve --config /etc/sieve/config.yaml
#
# Without --config sieve runs its embedded default pipeline, which listens on loopback
# only; a container config should bind 0.0.0.0 (or the pod IP) explicitly.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# librdkafka and OpenSSL (the `kafka` feature) build from source with make, perl and gcc,
# which this image has.
# `sieve --version` names the commit: from the checkout when .git is in the context,
# else from `--build-arg SIEVE_COMMIT=$(git rev-parse HEAD)`.
ARG SIEVE_COMMIT=""
RUN cargo build --release --locked --bin sieve

FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: the image should take the distribution's
# current trust store (and its security updates) at every build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 sieve
COPY --from=build /src/target/release/sieve /usr/local/bin/sieve
COPY pipelines /usr/share/sieve/pipelines
USER 10001
# OTLP gRPC, OTLP HTTP, self-metrics and health.
EXPOSE 4317 4318 8888
ENTRYPOINT ["/usr/local/bin/sieve"]
