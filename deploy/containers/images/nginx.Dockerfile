# nginx from Debian's nginx-light (1.22), for docker-compose.yml's `lb` where nginx:1.28-alpine
# cannot be pulled: NGINX_IMAGE=nlp-nginx:latest. 1.22 lacks the `resolve` upstream parameter and
# `http2 on;`: it runs the static-upstream configuration of deploy/compose/host-network.yml.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 3000 3001 8080
CMD ["nginx", "-g", "daemon off;"]
