# Shortcuts for the project's commands; each target says what it runs.
PY ?= python3
# pytest-benchmark keeps the committed baseline here (one folder per machine kind).
BENCH_STORE = file://bench/baseline
# A benchmark whose best (min) time is this much worse than the baseline's fails bench-check.
BENCH_MARGIN = min:25%

.PHONY: test bench bench-micro bench-save bench-check

test:            ## install what the tests need and run them all (what CI runs)
	./scripts/test

bench:           ## regenerate bench/RESULTS.md and bench/charts/ (about 7 minutes)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.results

bench-micro:     ## the pytest-benchmark suite, printed only
	$(PY) -m pytest bench/ --benchmark-only

bench-save:      ## record the current build's timings as the baseline
	$(PY) -m pytest bench/ --benchmark-only --benchmark-storage=$(BENCH_STORE) \
		--benchmark-save=baseline

bench-check:     ## fail if any benchmark regressed by more than BENCH_MARGIN vs the baseline
	$(PY) -m pytest bench/ --benchmark-only --benchmark-storage=$(BENCH_STORE) \
		--benchmark-compare --benchmark-compare-fail=$(BENCH_MARGIN)
