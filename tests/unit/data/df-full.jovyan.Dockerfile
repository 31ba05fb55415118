# kiln image spec 'full', revision 33654bfb
FROM jupyter/base-notebook:lab-4.0
USER root
RUN export DEBIAN_FRONTEND=noninteractive \
 && apt-get update \
 && apt-get install -y --no-install-recommends 'curl' 'jq' 'libssl-dev=3.0.11-1~deb12u2' \
 && rm -rf /var/lib/apt/lists/*
RUN conda install --yes 'conda-forge::numpy==1.17*' 'python=3.8' 'numpy>=1.11,<2' \
 && conda clean --all -f -y
RUN export PIP_BREAK_SYSTEM_PACKAGES=1 \
 && pip install --no-cache-dir 'numpy>=1.17' 'pandas[all]' 'tomli; python_version < '\''3.11'\'''
USER jovyan
