"""The explorer's FastAPI app: the page (plain HTML, CSS and JS from static/) and the JSON API under /api."""

import os
import threading
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from convscope.web import designer, network, playground, training, why
from convscope.web.datasets import discover_sources
from convscope.web.encoding import colormap_tables
from convscope.web.errors import install_error_handlers
from convscope.web.jobs import TrainingManager
from convscope.web.registry import ModelRegistry
from convscope.web.uploads import MAX_IMAGE_PIXELS, MAX_UPLOAD_BYTES

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")


@lru_cache(maxsize=1)
def _colormaps() -> dict:
    return colormap_tables()


def create_app(model_files=(), models_dir=None, data_dirs=()) -> FastAPI:
    """The app for the given --model files, --models-dir folder and --data-dir folders.

    Raises FileNotFoundError for a missing model file or data folder, before anything is served.
    """
    from convscope import __version__

    registry = ModelRegistry(model_files, models_dir)
    registry.remove_partial_saves()  # a server killed while saving left only a temporary file: no model
    trainer = TrainingManager(registry, discover_sources(data_dirs))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.closing.set()
        trainer.shutdown()

    app = FastAPI(
        title="convscope explorer",
        version=__version__,
        description="Draw or upload an image and watch it flow through your own CNN; slide kernels over "
        'images; train a CNN live. Errors answer as JSON: {"error": sentence, "status": code}.',
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.trainer = trainer
    app.state.playground_images = playground.UploadedImages()
    app.state.closing = threading.Event()  # set when the server is asked to stop
    install_error_handlers(app)
    app.add_middleware(designer.ArchitectureBodyLimit)
    for router in (network.router, why.router, playground.router, training.router, designer.router):
        app.include_router(router)

    @app.get("/api/health", tags=["server"], summary="Is the server up")
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/api/limits", tags=["server"], summary="Upload limits, for the page's messages")
    def limits() -> dict:
        return {"max_upload_bytes": MAX_UPLOAD_BYTES, "max_image_pixels": MAX_IMAGE_PIXELS}

    @app.get("/api/colormaps", tags=["server"], summary="magma, RdBu_r and gray as 256 RGB triples")
    def colormaps() -> dict:
        return _colormaps()

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
