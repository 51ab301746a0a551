# The pipeline image: Python 3.11 with the pinned Beam SDK (and its worker boot entrypoint) plus a
# Java 17 runtime, which building a pipeline with cross-language Kafka IO needs. The install steps are
# the ones scripts/bootstrap runs in CI.
FROM apache/beam_python3.11_sdk:2.73.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/programusers
COPY pyproject.toml README.md ./
COPY programusers ./programusers
RUN pip install --no-cache-dir .

# The SDK image's entrypoint is Beam's worker boot (/opt/apache/beam/boot); the CLI runs with
# `docker run --entrypoint programusers IMAGE ...`.
ENV PYTHONUNBUFFERED=1
