# distlog's container image: `docker build -t distlog .` (see README, "Deploy").
#
# Two stages. The first builds the binary with cargo in a Rust image; the second is a small Debian
# runtime with nothing but the binary, a non-root user and the /data volume.
#
# Without a registry (as in CI here), the first stage takes a binary built on the host instead:
# scripts/docker-image.sh runs
#   docker build -f Dockerfile --build-arg BUILD_IMAGE=debian:bookworm-slim \
#     --build-arg PREBUILT=distlog <a folder holding only the stripped binary>
# after scripts/docker-base.sh has made debian:bookworm-slim locally (debootstrap + docker import).
# A single build stage (rather than a stage per source) keeps this working with the classic
# builder too, which builds every stage whether the result needs it or not.

ARG BUILD_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
# The classic builder keeps this stage as an untagged image; scripts/docker-image.sh removes it
# by this label.
LABEL io.distlog.stage=build
# The path, within the build context, of a distlog binary built elsewhere; empty: build it here.
ARG PREBUILT=
# The commit, for distlog_build_info on /metrics (.git is not in the build context).
ARG REVISION=unknown
WORKDIR /src
COPY . .
RUN set -eu; \
    if [ -n "$PREBUILT" ]; then \
      install -m 0755 "$PREBUILT" /distlog; \
    else \
      DISTLOG_REVISION="$REVISION" cargo build --release --locked --bin distlog; \
      strip -o /distlog target/release/distlog || install -m 0755 target/release/distlog /distlog; \
    fi; \
    /distlog --version

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
# How the binary was built: release (the default, and what ships), or what scripts/docker-image.sh
# was handed in DISTLOG_IMAGE_BIN (CI packages its tests' debug build).
ARG PROFILE=release
LABEL org.opencontainers.image.title="distlog" \
      org.opencontainers.image.description="A distributed commit log served as JSON over HTTP" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="debian:bookworm-slim" \
      io.distlog.profile="${PROFILE}"
# A fixed uid/gid, so that volumes and bind mounts can be prepared for it; /data is its own
# before it becomes a volume, so a new named volume starts out owned by it.
RUN groupadd --gid 10001 distlog \
    && useradd --uid 10001 --gid distlog --home-dir /data --no-create-home --shell /usr/sbin/nologin distlog \
    && mkdir /data && chown distlog:distlog /data
COPY --from=build /distlog /usr/local/bin/distlog
# Listen on every interface in the container; keep the log in the volume. The grace period for
# in-flight requests (and a cluster leader's hand-over) stays well inside `docker stop`'s 10 s
# before SIGKILL.
ENV DISTLOG_LISTEN=0.0.0.0:8080 \
    DISTLOG_DATA_DIR=/data \
    DISTLOG_SHUTDOWN_GRACE_MS=5000
USER distlog:distlog
WORKDIR /data
VOLUME ["/data"]
# No EXPOSE: the port is DISTLOG_LISTEN's (8080 unless set), and deploy/compose.yaml's nodes listen
# on their own (9001-9003); an EXPOSE 8080 showed there as a stray, unpublished 8080/tcp beside
# them. Publish the port you listen on: `docker run -p 8080:8080 ...`.
# `distlog healthcheck` GETs /readyz at the DISTLOG_LISTEN port with the node's own settings: https
# with DISTLOG_TLS_CERT (that certificate, or DISTLOG_HEALTHCHECK_CA's), and with
# DISTLOG_PROTECT_METRICS an admin's token from DISTLOG_TOKEN_FILE (or DISTLOG_HEALTHCHECK_TOKEN).
# No shell or curl needed.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/distlog", "healthcheck"]
# Exec form: distlog is PID 1 and gets docker stop's SIGTERM itself.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/distlog"]
CMD ["serve"]
