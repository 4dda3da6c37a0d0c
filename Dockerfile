# One image for the API, the workers, the UI and the migration step (docker-compose.yml picks the command).
# On x86_64 Linux, PyPI's torch wheel pinned in requirements.lock is the CUDA build the GPU workers use.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AUGLOOP_DATA_DIR=/data \
    HF_HOME=/data/hf

RUN apt-get update \
    && apt-get install -y --no-install-recommends make wordnet-base wordnet-sense-index \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY . .
RUN pip install --no-deps -e . \
    && python -m workers.augment.wordnet_data install

EXPOSE 8000 8501
CMD ["augloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
