# syntax=docker/dockerfile:1
#
# archscreen production image: one image for `archscreen migrate`, `api` and `worker`.
#
#   docker build -t archscreen .                                        # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cu128 -t archscreen:cu128 .  # CUDA 12.8 torch for GPU workers
#
# TORCH_VARIANT names a PyTorch wheel index: cpu -> https://download.pytorch.org/whl/cpu,
# cu128 -> https://download.pytorch.org/whl/cu128, and so on. torch is installed first and pinned,
# then the project wheel, whose `torch>=2.4` is already satisfied (the constraint keeps it that way).

# Both stages use the same base image: /opt/venv/bin/python links to the base image's interpreter.

# ---------------------------------------------------------------- builder
FROM python:3.11-slim AS builder

ARG TORCH_VARIANT=cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, in its own layer, so code changes do not re-download it.
RUN pip install --upgrade pip \
 && pip install torch==2.13.0 --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
 && echo "torch==2.13.0" > /tmp/constraints.txt

# Then the project wheel and its remaining dependencies from PyPI.
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /tmp/dist . \
 && pip install --constraint /tmp/constraints.txt /tmp/dist/archscreen-*.whl \
 && archscreen --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ARCHSCREEN_DATA_DIR=/var/lib/archscreen

# uid/gid 10001; the data dir (and artifacts/, so a fresh named volume mounted there inherits the
# ownership) belongs to that user.
RUN groupadd --system --gid 10001 archscreen \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/archscreen --no-create-home \
      --shell /usr/sbin/nologin archscreen \
 && mkdir -p /var/lib/archscreen/artifacts /app \
 && chown -R 10001:10001 /var/lib/archscreen /app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# Liveness of the API process. Containers that run `migrate` or `worker` serve no HTTP: the compose
# file disables this check for them.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["archscreen"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
