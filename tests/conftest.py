"""Shared test setup.

This file also makes `tests/` importable: with pytest's default ("prepend") import mode, the folder
of a conftest.py that is not inside a package is put on sys.path, so test modules anywhere below
can `import torch_helpers` without any `__init__.py` files.
"""

import pytest


@pytest.fixture(autouse=True)
def isolated_download_cache(tmp_path_factory, monkeypatch):
    """Point convscope's data cache ($CONVSCOPE_DATA) at an empty folder, so no test depends on what a
    developer downloaded."""
    monkeypatch.setenv("CONVSCOPE_DATA", str(tmp_path_factory.getbasetemp() / "empty-data-cache"))


@pytest.fixture(params=["numpy", "numba"])
def kernel_backend(request):
    """Run the test once on the reference ops and once on the compiled kernels (convscope.kernels)."""
    from convscope import kernels

    with kernels.using(request.param):
        yield request.param
