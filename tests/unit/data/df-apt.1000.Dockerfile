# kiln image spec 'apt-only', revision 09c7f312
FROM localhost:5000/kiln/base:bookworm
USER root
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends 'curl' 'jq' \
 && rm -rf /var/lib/apt/lists/*
USER 1000
