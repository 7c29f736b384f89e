# syntax=docker/dockerfile:1
# taskd: one image for every role, chosen by argument:
#   docker run IMAGE --role api            (or worker, promoter, all; `docker run IMAGE migrate`)
# Your handlers: build FROM this image, add your package under /app (the working directory is on
# the import path for --handlers) and run `--role worker --handlers yourpkg.tasks`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of taskd, installed with its dependencies into /opt/venv ------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY taskd/ taskd/
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed even here.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/taskd-*.whl
# migrations/ is not package data: taskd.store.migrate.default_directory() finds it inside the
# installed package, so `taskd migrate` works from any directory. Fail the build if it does not.
COPY migrations/ /src/migrations/
RUN pkg="$(/opt/venv/bin/python -c 'import pathlib, taskd; print(pathlib.Path(taskd.__file__).parent)')" \
 && cp -r /src/migrations "$pkg/migrations" \
 && /opt/venv/bin/python -c 'from taskd.store.migrate import default_directory, discover; assert discover(default_directory())' \
 && /opt/venv/bin/taskd --help > /dev/null

# ---- runtime: the interpreter, the venv and the demo handlers; no compilers, not root ---------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="taskd" \
      org.opencontainers.image.description="A distributed task scheduler: durable like a Postgres queue, fast like a Redis queue." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 taskd \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin taskd
COPY --from=build /opt/venv /opt/venv
# Container defaults (listen on 0.0.0.0, JSON logs); Kubernetes mounts its ConfigMap over this file.
COPY config/container.yaml /etc/taskd/taskd.yaml
WORKDIR /app
COPY examples/ examples/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKD_CONFIG=/etc/taskd/taskd.yaml
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# 8080: the api role (REST, /healthz, /readyz, /metrics); 9464: /healthz, /readyz, /metrics of the others.
EXPOSE 8080 9464
ENTRYPOINT ["taskd"]
CMD ["--role", "all"]
