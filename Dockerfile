# One image for both production processes: `jobreg api` and `jobreg worker`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY registry ./registry
COPY workers ./workers
COPY api ./api
RUN pip install --no-cache-dir .
USER nobody
EXPOSE 8000
CMD ["jobreg", "api", "--host", "0.0.0.0", "--port", "8000"]
