"""``python -m tfshare``: the same as the ``tfshare`` command."""

import importlib

# Imported by name: tfshare.cli lives in cli/ of the source tree (see pyproject.toml).
importlib.import_module("tfshare.cli.app").main()
