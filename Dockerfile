# extauthz-server image: the package and its runtime dependencies only.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY extauthz_server ./extauthz_server
RUN pip install --no-cache-dir . && useradd --system --uid 10001 extauthz
USER extauthz
EXPOSE 9191 8181
ENTRYPOINT ["extauthz-server"]
CMD ["--config", "/etc/extauthz/config.yaml"]
