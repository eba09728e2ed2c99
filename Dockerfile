# fastzero-lab for a classroom: Debian's nbdkit, qemu-img and libnbd, and the lab in a venv.
# Everything is installed by scripts/install.sh, the same script README and CI use.
# Build: docker compose build, docker-compose build or docker build -t fastzero-lab .; see docs/classroom.md.
# An engine that cannot pull debian:bookworm-slim can have it made by scripts/docker-base.sh.
FROM debian:bookworm-slim

LABEL org.opencontainers.image.title="fastzero-lab" \
      org.opencontainers.image.description="Re-run the NBD fast-zero case study live: qemu-img/libnbd clients against nbdkit" \
      org.opencontainers.image.licenses="MIT"

ENV LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Layer 1, rarely rebuilt: Debian packages and the unprivileged user that owns the data dir.
COPY scripts/install.sh scripts/install.sh
RUN bash scripts/install.sh --system-only \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 lab \
    && useradd --system --uid 10001 --gid lab --home-dir /data --no-create-home --shell /usr/sbin/nologin lab \
    && install -d -o lab -g lab -m 0750 /data

# Layer 2, rebuilt only when pyproject.toml changes: the venv with the third-party packages.
COPY pyproject.toml ./
RUN bash scripts/install.sh --deps-only

# Layer 3: the lab itself, installed into the same venv (root-owned, read-only for the service).
COPY README.md ./
COPY scripts/ scripts/
COPY lab/ lab/
COPY app/ app/
COPY templates/ templates/
COPY static/ static/
RUN bash scripts/install.sh \
    && .venv/bin/python -m compileall -q lab app

# Server kinds and storages: nbdkit (memory, file), qemu-nbd and nbd-server work as this
# unprivileged user on the private dir and on `datadir` storage (the /data volume). The
# storages that mount or use loop devices (tmpfs, ext4, xfs, btrfs, blockdev) need root and
# a privileged container (docker run --privileged, running as root: --user 0); otherwise
# GET /api/kinds and `lab kinds` list them as unavailable with the reason. External NBD
# targets are off unless LAB_EXTERNAL_TARGETS lists them.
# History (SQLite) and the cached source images live in the volume; sockets go to /tmp.
ENV LAB_DATA_DIR=/data \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000

# The venv's python probes the API (scripts/healthcheck.py: healthy while it answers, `starting` included;
# one line when not), so the image needs no curl. The first probe comes one interval after the start.
HEALTHCHECK --interval=5s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/app/.venv/bin/python", "-I", "/app/scripts/healthcheck.py", "http://127.0.0.1:8000/api/v1/health"]

# SIGTERM (docker stop) makes the lab interrupt its runs, stop its servers and exit 0.
CMD ["lab", "serve", "--host", "0.0.0.0", "--port", "8000"]
