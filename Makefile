# hopforge: `make demo` and `make test` work on a fresh machine with Python >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# llama-cpp-python builds from source (5-8 min on 2 cores); the wheel is cached per machine.
WHEELS ?= $(HOME)/.cache/hopforge/wheels
LLAMA_VERSION := 0.3.36
DEMO_OUT ?= demo-data

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: install demo test test-fast clean llama-wheel bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(MAKE) llama-wheel
	# ray: prefect-ray pulls ray (an 80 MB wheel, ~300 MB installed, ~35 s here) for tests/flows/test_ray.py.
	$(BIN)/python -m pip install -q --find-links $(WHEELS) -e ".[dev,cpu,dask,ray,train]"
	touch $@

llama-wheel:
	@mkdir -p $(WHEELS)
	@if ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "llama-cpp-python $(LLAMA_VERSION): using cached wheel in $(WHEELS)"; \
	else \
	  echo "building llama-cpp-python $(LLAMA_VERSION) from source (5-8 min, once per machine)"; \
	  CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip wheel -q --no-cache-dir --no-deps \
	    "llama-cpp-python==$(LLAMA_VERSION)" -w $(WHEELS); \
	fi

demo: install
	$(BIN)/hopforge run --config configs/demo.toml --out $(DEMO_OUT)
	$(BIN)/hopforge sql --out $(DEMO_OUT) "SELECT q.hops, count(DISTINCT q.question_id) AS questions, \
	  count(DISTINCT q.question_id) FILTER (WHERE q.passed) AS passed_checks, \
	  count(t.trajectory_id) AS trajectories, count(k.trajectory_id) AS kept \
	  FROM questions q LEFT JOIN trajectories t USING (question_id) LEFT JOIN kept k USING (trajectory_id) \
	  GROUP BY 1 ORDER BY 1"

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python benchmarks/storage.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
