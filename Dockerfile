# coalmine operator image. Build: docker build -t coalmine:0.1.0 .
# Runtime dependencies are pinned by constraints.txt (tools/lock-runtime-deps.py, from the tested venv).
# Runs as a non-root user with a read-only root filesystem: nothing is written outside /tmp
# (HOME and TMPDIR point there; the Deployment mounts an emptyDir on /tmp).
#
# BASE_IMAGE: any image with Python 3.11 (python3 with venv), groupadd and useradd. The default is the
# official slim image; tools/build-image.sh, where no registry is reachable, passes a local Debian
# bookworm base made with debootstrap instead.
ARG BASE_IMAGE=python:3.11.14-slim-trixie

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
RUN python3 -m venv /opt/coalmine
# The dependencies first (constraints.txt is exactly their closure), so a change to the code reuses this layer.
COPY constraints.txt ./
RUN /opt/coalmine/bin/pip install --no-compile --requirement constraints.txt
COPY pyproject.toml README.md LICENSE ./
COPY operator/ operator/
RUN /opt/coalmine/bin/pip install --no-compile --no-deps . \
    && /opt/coalmine/bin/pip check \
    && /opt/coalmine/bin/python -m compileall -q /opt/coalmine

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10001 coalmine \
    && useradd --system --uid 10001 --gid coalmine --home-dir /tmp --no-create-home --shell /usr/sbin/nologin coalmine
COPY --from=build /opt/coalmine /opt/coalmine
ENV PATH=/opt/coalmine/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 9090
# The same command the tests run (`python -m coalmine run`); settings come from COALMINE_* env.
ENTRYPOINT ["coalmine"]
CMD ["run"]
