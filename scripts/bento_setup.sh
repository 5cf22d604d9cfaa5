#!/usr/bin/env sh
# Container build step, run after requirements.txt: pyiqa's declared dependencies would pull a
# second OpenCV build (and datasets, bitsandbytes, ...) that NIMA does not need. The pin matches
# requirements-nodeps.txt (tests/test_bento.py checks it).
set -eu
uv pip install --no-deps pyiqa==0.1.16
