# coalmine operator image. Build: docker build -t coalmine:0.1.0 .
# Runtime dependencies are pinned by constraints.txt (tools/lock-runtime-deps.py, from the tested venv).
# Runs as a non-root user with a read-only root filesystem: nothing is written outside /tmp
# (HOME and TMPDIR point there; the Deployment mounts an emptyDir on /tmp).

FROM python:3.11.14-slim-trixie AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
RUN python -m venv /opt/coalmine
COPY constraints.txt pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/coalmine/bin/pip install --no-compile . \
    && /opt/coalmine/bin/python -m compileall -q /opt/coalmine

FROM python:3.11.14-slim-trixie
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
