# Everything a fresh Debian/Ubuntu machine needs, then the job. `make demo`, `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Seconds of the `ornav demo` scenario once the stack is up (9 at least).
DURATION ?= 20
# Open3D needs libusb; its offscreen renderer needs Vulkan (Mesa's software driver without a GPU).
# Chromium (Debian's, driven by playwright) runs the browser pages in tests; node/npm fetch
# their JavaScript dependencies from the lockfile.
SYSTEM_PACKAGES := libusb-1.0-0 libvulkan1 mesa-vulkan-drivers libgl1 libegl1 chromium \
	fonts-dejavu-core
WEB := render/web

.PHONY: demo demo-deformable test test-fast bench lint setup system-deps clean

demo: $(STAMP)
	$(BIN)/ornav demo --duration $(DURATION) --run-dir runs/demo --summary runs/demo/summary.json

# The deformed organ, the surface trace and the live deformable fit (cli/demo/deformable.py).
demo-deformable: $(STAMP)
	$(BIN)/ornav demo --scenario deformable --run-dir runs/demo-deformable --summary runs/demo-deformable/summary.json

test: $(STAMP)
	$(BIN)/python -m pytest

# The edit loop: pure tests only (no processes, no sockets), tens of seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m "not slow"

bench: $(STAMP)
	# The peers bench/registration.py compares against (pycpd, probreg): bench only.
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/calibration.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/aruco.py
	$(BIN)/python bench/igtl.py
	$(BIN)/python bench/registration.py
	$(BIN)/python bench/headset.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/stereo.py
	$(BIN)/python bench/web.py
	# CURVE's cost on the pose path, a stranger's flood, handshakes, a 10-minute soak
	# (--soak-s 3600 for the hour).
	$(BIN)/python bench/curve.py --soak-s 600

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

setup: $(STAMP)

system-deps:
	@missing=""; \
	for pkg in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
	  $$sudo apt-get update -qq && $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# torch is installed first, pinned, so pip takes the CPU build from local disk instead of
# resolving an unpinned CUDA build of several GB.
$(STAMP): pyproject.toml $(WEB)/package-lock.json | system-deps
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	cd $(WEB) && npm ci --no-audit --no-fund --loglevel=error
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules
