# syntax=docker/dockerfile:1
# The operator image: a release build of `ecs-defender-operator` on a distroless, nonroot base
# (glibc, libgcc and CA roots; no shell, no package manager).
#
#   docker build -t ecs-defender-operator:dev .

ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS build
# aws-lc-sys (the AWS SDK's TLS crypto) builds C code; cmake is its fallback build path. Pinned to
# bookworm's 3.25 series (hadolint DL3008), any Debian revision of it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake=3.25.* \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (see .dockerignore): the sandbox member's manifest is needed to resolve it,
# but only the operator binary is built.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin ecs-defender-operator \
    && install -D -m 0755 target/release/ecs-defender-operator /out/ecs-defender-operator

# Same Debian release as the build image, so the glibc the binary links against is there.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ecs-defender-operator" \
      org.opencontainers.image.description="Deploys Prisma Cloud Defenders into AWS ECS clusters from EcsDefenderDeployment resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ecs-defender-operator /usr/local/bin/ecs-defender-operator
# distroless's nonroot user; the chart runs it with a read-only root filesystem.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/ecs-defender-operator"]
