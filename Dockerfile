# servegraph's own processes: frontend, processor, mock engine, supervisor, and the `graph` CLI.
# (Engines run in their own images: vLLM, SGLang, TensorRT-LLM.)
#
#   docker build -t REGISTRY/servegraph:0.1.0 . && docker push REGISTRY/servegraph:0.1.0
#   docker run --rm -p 8000:8000 REGISTRY/servegraph:0.1.0 run pipelines/pd.py --mock --host 0.0.0.0
#
# Without a Docker daemon, scripts/build-image.sh executes this same file (debootstrap for FROM, a chroot
# for RUN); it supports FROM, RUN, COPY, ENV, WORKDIR, USER, LABEL, ENTRYPOINT, CMD and EXPOSE only.
#
# Runs as uid/gid 10001 (numeric, so Kubernetes' runAsNonRoot can check it) and works with a read-only
# root filesystem. Where our processes write:
#   /tmp      `graph run`'s workdir (plan, configs, logs/, state.json) unless --workdir names another
#             folder, which must then be writable (a volume), as must the folder given to
#             `python -m nodes.supervisor DIR`. The frontend, processor and mock engine write nothing.
#   /dev/shm  the tensor edge's shared-memory fallback (the runtime's tmpfs; a memory emptyDir in k8s).
# So with readOnlyRootFilesystem, mount an emptyDir on /tmp.

# Debian 12 as of 2025-05-20; Python is Debian's python3 (3.11), so the image is all Debian packages plus
# wheels from PyPI.
FROM debian:bookworm-20250520-slim

# No compiler is installed: every dependency comes as a wheel (--only-binary), or the build fails here.
# ca-certificates: the processor fetches media over HTTPS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 servegraph \
 && useradd --uid 10001 --gid 10001 --no-log-init --create-home --shell /usr/sbin/nologin servegraph

ENV VIRTUAL_ENV=/opt/servegraph \
    PATH=/opt/servegraph/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The build context is only what .dockerignore lets through: pyproject.toml, README.md and the packages.
COPY . /usr/src/servegraph/
RUN python3 -m venv "$VIRTUAL_ENV" \
 && pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: /usr/src/servegraph \
 && rm -rf /usr/src/servegraph

# The example graphs, so the image runs the README's quick start by itself; mount your own pipelines over
# /app/pipelines (or next to them). /app holds no Python package, so `python -m nodes.x` imports the
# installed package, never a copy in the working folder.
WORKDIR /app
COPY pipelines /app/pipelines

USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["graph"]
CMD ["--help"]

LABEL org.opencontainers.image.title="servegraph" \
      org.opencontainers.image.description="servegraph's own processes (frontend, processor, mock engine, supervisor) and the graph CLI" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-20250520-slim"
