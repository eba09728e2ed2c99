.PHONY: run test check lint bench
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh
check:
	bash scripts/test.sh --fast
lint:
	.venv/bin/ruff check .
bench:
	.venv/bin/python bench/run_all.py
