# The two commands a newcomer needs: `make demo` (the main job end to end on local services with
# sample data) and `make test` (the whole suite). Both install what is missing and start the stack.
.PHONY: demo test check stack-up stack-down
DEMO_ARGS ?=

demo:
	scripts/bootstrap
	scripts/stack up $(findstring --secure,$(DEMO_ARGS))
	scripts/demo $(DEMO_ARGS)

test:
	scripts/bootstrap
	scripts/stack up --secure
	.venv/bin/python -m pytest

# The quick check, no service needed: the linter and the tests that need no stack.
check:
	scripts/bootstrap
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -m "not services and not runners"

stack-up:
	scripts/stack up

stack-down:
	scripts/stack down
