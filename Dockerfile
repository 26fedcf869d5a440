# One image for every Heddle service; the command picks the service:
#   docker run heddle python -m services.workflow      (gateway, workflow, node, ai, tool,
#                                                        scheduler, log)
# Build: docker build -t heddle:latest .

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
# A regular (not editable) install: the runtime stage needs only /opt/venv.
RUN pip install . \
    && python -c "import services.workflow.server, libs.cli.healthcheck, heddle.v1"

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEDDLE_BIND_HOST=0.0.0.0 \
    HEDDLE_HTTP_HOST=0.0.0.0 \
    HEDDLE_LOG_FORMAT=json
# bubblewrap: the jail of code nodes (services/node/README.md, "Sandbox").
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 heddle \
    && useradd --system --uid 10001 --gid heddle --home-dir /app --shell /usr/sbin/nologin heddle \
    && mkdir -p /app/var \
    && chown -R heddle:heddle /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# gateway HTTP, the services' gRPC ports, Prometheus /metrics of the gRPC services
EXPOSE 8080 50051 50052 50053 50054 50055 50056 9100
CMD ["python", "-m", "services.gateway"]
