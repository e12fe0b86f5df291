"""The models the explorer may open: the files named with --model and the .convscope files of the models
folder, each known by a short name. Clients name models; no path from a client is ever opened."""

import os
import re
import threading
from dataclasses import dataclass

from convscope.web.errors import WebError

MODEL_SUFFIX = ".convscope"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
PARTIAL_SAVE = re.compile(
    r"\.tmp-.+-[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.convscope"
)  # write_archive's temporaries


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: str  # an absolute path chosen by the server, never by a client
    source: str  # "file" (given with --model) or "folder" (found in the models folder)


def check_model_name(name: str) -> str:
    """A name for a saved model: letters, digits, '_', '.', '-', at most 64 characters, no path."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or name.endswith(MODEL_SUFFIX):
        raise WebError(
            422,
            f"{name!r} is not a usable model name: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit (no folders, no .convscope ending)",
        )
    return name


def _unique(name: str, taken: set) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    return candidate


class ModelRegistry:
    """Model files by name, with the loaded models cached until their file changes.

    files: paths given on the command line (each must exist); models_dir: a folder scanned for
    *.convscope files on every listing (it may not exist yet; trained models are saved there).
    """

    def __init__(self, files=(), models_dir=None):
        self.models_dir = os.path.abspath(models_dir) if models_dir else None
        if (
            self.models_dir is not None
            and os.path.exists(self.models_dir)
            and not os.path.isdir(self.models_dir)
        ):
            raise NotADirectoryError(f"{self.models_dir}: not a folder (the models folder must be one)")
        self._files = []
        self._cache: dict[str, tuple] = {}
        self._lock = threading.Lock()
        for path in files:
            path = os.path.abspath(os.fspath(path))
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such model file")
            self._load_file(path)  # a damaged file is refused now, like a missing one
            self._files.append(path)

    def _load_file(self, path: str):
        """The model in `path`, from the cache while the file is unchanged; ModelFileError or OSError."""
        from convscope import load_model

        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            model = load_model(path)
            model.workers = 1  # one image at a time: threads would only add overhead
            self._cache[path] = (stamp, model)
            return model

    def entries(self) -> dict[str, ModelEntry]:
        """Every model by name: the --model files first (named by their file name), then the folder's."""
        entries: dict[str, ModelEntry] = {}
        seen_paths = set()
        for path in self._files:
            stem = os.path.basename(path).removesuffix(MODEL_SUFFIX) or "model"
            name = _unique(stem, set(entries))
            entries[name] = ModelEntry(name, path, "file")
            seen_paths.add(path)
        for file_name in self._folder_files():
            path = os.path.join(self.models_dir, file_name)
            if path not in seen_paths:
                name = _unique(file_name.removesuffix(MODEL_SUFFIX), set(entries))
                entries[name] = ModelEntry(name, path, "folder")
        return entries

    def _folder_files(self) -> list[str]:
        if self.models_dir is None or not os.path.isdir(self.models_dir):
            return []
        return sorted(
            name
            for name in os.listdir(self.models_dir)
            if name.endswith(MODEL_SUFFIX)
            and not name.startswith(".")
            and os.path.isfile(os.path.join(self.models_dir, name))
        )

    def entry(self, name: str) -> ModelEntry:
        """The entry called `name`, or a 404 WebError listing the known names."""
        entries = self.entries()
        if name not in entries:
            known = ", ".join(entries) or "none (start convscope serve with --model FILE or --models-dir DIR)"
            raise WebError(404, f"there is no model called {name!r}; known models: {known}")
        return entries[name]

    def load(self, name: str):
        """The Sequential model called `name` (cached while its file is unchanged), or a WebError."""
        entry = self.entry(name)
        if not os.path.exists(entry.path):
            raise WebError(404, f"the file of model {name!r} is gone")
        try:
            return self._load_file(entry.path)
        except (ValueError, OSError) as error:
            raise WebError(422, f"model {name!r} cannot be loaded: {error}") from None

    def remove_partial_saves(self) -> list[str]:
        """Delete the temporary files of saves that never finished (a server killed while writing one:
        convscope.archive.write_archive writes `.tmp-*-NAME.convscope` and renames it only once complete).
        Returns their names. Run at start-up, before anything is saved."""
        if self.models_dir is None or not os.path.isdir(self.models_dir):
            return []
        removed = []
        for name in os.listdir(self.models_dir):
            path = os.path.join(self.models_dir, name)
            if PARTIAL_SAVE.fullmatch(name) and os.path.isfile(path):
                os.unlink(path)
                removed.append(name)
        return removed

    def save_path(self, name: str) -> str:
        """Where a newly trained model called `name` goes: <models folder>/<name>.convscope."""
        check_model_name(name)
        if self.models_dir is None:
            raise WebError(409, "no models folder is configured: start convscope serve with --models-dir DIR")
        if name in self.entries():
            raise WebError(409, f"a model called {name!r} already exists: choose another name")
        return os.path.join(self.models_dir, name + MODEL_SUFFIX)
