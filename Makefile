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

test:
	@LOCOMLX_EXTRAS="torch llama" bash scripts/setup.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q
	$(VENV)/bin/locomlx registry validate

serve: setup
	$(VENV)/bin/locomlx serve

bench: setup
	$(VENV)/bin/locomlx bench
