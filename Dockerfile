# The spark-ml image: `docker build -t spark-ml .`; entry point `spark-ml` (default command: worker).
# Two stages: the build stage installs the project into a virtual environment, the runtime stage copies
# only that environment, and runs as an unprivileged user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# gcc: the C kernel of the feature state (setup.py); only this stage has a compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY core ./core
COPY worker ./worker
COPY gateway ./gateway
COPY scripts ./scripts
COPY client ./client
# The lgbm extra: a worker serves promoted LightGBM models (training stays out of the image: spark-ml[train]).
RUN python -m venv /opt/spark-ml && /opt/spark-ml/bin/pip install .[lgbm]

FROM python:3.11-slim
# libgomp1: the OpenMP runtime LightGBM's wheel links against; slim images lack it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/spark spark \
    && mkdir -p /data/registry \
    && chown -R spark:spark /data
COPY --from=build /opt/spark-ml /opt/spark-ml
ENV PATH=/opt/spark-ml/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SPARK_ML_BIND_HOST=0.0.0.0 \
    SPARK_ML_REGISTRY=/data/registry
USER spark
WORKDIR /home/spark
# 9464: worker metrics sidecar (/metrics, /healthz, /readyz); 4010: HTTP gateway.
EXPOSE 9464 4010
# A named volume mounted here starts with this directory's owner, so the non-root user can write it.
VOLUME ["/data/registry"]
ENTRYPOINT ["spark-ml"]
CMD ["worker"]
