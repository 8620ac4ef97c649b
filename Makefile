# Shortcuts for the project's commands; each target says what it runs.
PY ?= python3
# bench-check options, e.g. make bench-check CHECK_ARGS='--baseline v0.1 --rounds 5'
CHECK_ARGS ?=

.PHONY: test man bench bench-micro bench-check

test:            ## install what the tests need and run them all (what CI runs)
	./scripts/test

man:             ## regenerate the manual page fastrelay.1 from the parser and manpage.py
	PYTHONPATH=$(CURDIR) $(PY) -m fastrelay.manpage > fastrelay.1.new && mv fastrelay.1.new fastrelay.1

bench:           ## regenerate bench/RESULTS.md and bench/charts/ (about 10 minutes)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench.results

bench-micro:     ## the pytest-benchmark suite, printed only
	$(PY) -m pytest bench/ --benchmark-only

bench-check:     ## fail if this tree is slower than the baseline revision, both run here now
	$(PY) -m bench.check $(CHECK_ARGS)
