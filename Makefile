# The project's commands. `make test` sets itself up on a fresh clone (CPU, no network
# beyond the package index) and runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup test test-fast train demo tables bench clean

setup: $(VENV)/.installed

# torch first and pinned: 2.13.0 is the CPU wheel here; an unpinned torch would pull CUDA.
# Every other package at the version in constraints.txt (the versions the tests passed with).
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

test: setup
	$(OFFLINE) $(PY) -m pytest -q

# Everything but the end-to-end training runs and the multi-process tests.
test-fast: setup
	$(OFFLINE) $(PY) -m pytest -q -m "not slow and not distributed"

# One training run of the embedded default; pass overrides as ARGS="clip.beta=0.9 seed=1".
train: setup
	$(OFFLINE) $(PY) -m aggc.train model=tiny_llama data=arith strategy=aggc $(ARGS)

# The whole pipeline on the embedded default, on CPU: Full FT / LoRA / AGGC / LoRA without
# clipping x 3 seeds -> evaluation on 200 held-out problems (lm-eval) -> results/demo/table1.md.
DEMO_RUNS ?= runs/demo
DEMO_OUT ?= results/demo
DEMO_SEEDS ?= 0,1,2
DEMO_TRAIN_ARGS ?=
DEMO_EVAL_ARGS ?=
demo: setup
	$(OFFLINE) $(PY) -m aggc.train -m runs_root=$(DEMO_RUNS) wandb.mode=disabled strategy=full_ft,lora,aggc seed=$(DEMO_SEEDS) $(DEMO_TRAIN_ARGS)
	$(OFFLINE) $(PY) -m aggc.train -m runs_root=$(DEMO_RUNS) wandb.mode=disabled strategy=lora clip=none seed=$(DEMO_SEEDS) $(DEMO_TRAIN_ARGS)
	$(OFFLINE) $(PY) -m aggc.evaluate -m eval=arith max_gen_toks=64 batch_size=50 $(DEMO_EVAL_ARGS) \
		run=$$(find $(DEMO_RUNS) -name COMPLETED -printf "'%h'\n" | sort | paste -sd, -)
	$(PY) -m aggc.tables table=demo runs_root=$(DEMO_RUNS) out_dir=$(DEMO_OUT)

# Render a paper table from the run directories under runs/ (results/<table>.{md,tex,csv}).
TABLE ?= table1
tables: setup
	$(PY) -m aggc.tables table=$(TABLE)

clean:
	rm -rf runs outputs multirun

# Clipping cost, measured side by side (results/bench/cpu.{json,md}); BENCH_ARGS="--device cuda" on a GPU.
bench: setup
	$(PY) -m aggc.bench $(BENCH_ARGS)
