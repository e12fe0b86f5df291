"""Shared test setup.

This file also makes `tests/` importable: with pytest's default ("prepend") import mode, the folder
of a conftest.py that is not inside a package is put on sys.path, so test modules anywhere below
can `import torch_helpers` without any `__init__.py` files.
"""
