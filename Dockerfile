# The shipper agent image (also runs `shipper retention` for the retention CronJob).
#
#   docker build -t shipper:0.1.0 .
#
# Builder: the Rust toolchain this repository is tested with. Runtime: distroless `cc`
# (glibc, libgcc, CA certificates; no shell, no package manager), as the unprivileged
# `nonroot` user (65532). The generated DaemonSet runs the agent as uid 0 with every
# capability dropped, because container logs are readable by root alone; the retention
# CronJob keeps the image's nonroot user.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin shipper \
    && strip target/release/shipper

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/shipper /usr/local/bin/shipper
USER nonroot
# Metrics and health (--metrics-addr).
EXPOSE 2020
ENTRYPOINT ["/usr/local/bin/shipper"]
