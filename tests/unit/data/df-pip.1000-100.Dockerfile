# kiln image spec 'pip-only', revision faa194cd
FROM jupyter/base-notebook
USER root
RUN export PIP_BREAK_SYSTEM_PACKAGES=1 \
 && pip install --no-cache-dir 'requests'
USER 1000:100
