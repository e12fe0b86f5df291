"""The core modules import each other one way: checks <- model <- model_file <- checkpoint <- train.
(Sequential.fit and Sequential.save call up into train and model_file from inside the methods.)"""

import ast
from pathlib import Path

import convscope

PACKAGE = Path(convscope.__file__).parent
CORE = ("checks", "model", "model_file", "checkpoint", "train")


def _top_level_imports(module: str) -> set:
    """The convscope modules that `module` imports when it is itself imported (module level only)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("convscope."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("convscope.")}
    return found


def test_the_core_modules_import_one_way():
    order = {name: rank for rank, name in enumerate(CORE)}
    for module in CORE:
        upward = [m for m in _top_level_imports(module) if m in order and order[m] >= order[module]]
        assert not upward, f"{module} imports {upward}, which should come after it in {CORE}"


def test_input_checks_live_in_their_own_module_and_stay_importable_from_model():
    from convscope import checks, model

    assert _top_level_imports("checks") == set()
    assert "model" not in _top_level_imports("train")
    for name in ("check_images", "check_labels", "checked_standardization", "checked_augmentation"):
        assert getattr(model, name) is getattr(checks, name)
