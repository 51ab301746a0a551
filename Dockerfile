# The pipeline image: Python 3.11 with the pinned Beam SDK (and its worker boot entrypoint,
# /opt/apache/beam/boot, used by the TaskManager sidecar with --worker_pool) plus a Java 17 runtime,
# which building a pipeline with cross-language Kafka IO and starting Beam's job servers need.
# The Python install is the one scripts/bootstrap runs in CI.
FROM apache/beam_python3.11_sdk:2.73.0

RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless maven \
 && rm -rf /var/lib/apt/lists/*

# Beam's job-server jars, where programusers.runners looks for them (never downloaded at run time),
# fetched by Maven's own client from its default repository.
ENV PROGRAMUSERS_CACHE=/opt/programusers/cache
RUN for artifact in beam-runners-flink-1.20-job-server beam-runners-spark-3-job-server; do \
      mvn -q -B dependency:copy -Dartifact=org.apache.beam:${artifact}:2.73.0 \
        -DoutputDirectory=/opt/programusers/cache/jars || exit 1; \
    done \
 && rm -rf /root/.m2

WORKDIR /opt/programusers
COPY pyproject.toml README.md ./
COPY programusers ./programusers
RUN pip install --no-cache-dir '.[gcp]'

ENV PYTHONUNBUFFERED=1
# The entrypoint stays Beam's boot (for the worker-pool sidecar); the jobs run `programusers ...`.
