"""The JSON Schema documents shipped with tfshare, importable as package data (tfshare.schemas).

The documents themselves are schemas/<subject>/<version>.json; this file only lets setuptools
install the folder as tfshare.schemas (see pyproject.toml).
"""
