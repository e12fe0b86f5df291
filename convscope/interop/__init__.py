"""Bridges to other engines. Importing this package does not import torch; calling does."""


def to_torch(model):
    """convscope Sequential -> torch.nn.Sequential with the same weights (see interop.pytorch)."""
    from convscope.interop.pytorch import to_torch as convert

    return convert(model)


__all__ = ["to_torch"]
