"""The local web explorer behind `convscope serve`: a FastAPI app over the same library calls as the CLI.

Network view (a model's layers for a drawn or uploaded image), convolution playground (a kernel over an
image) and training view (a live chart); the JSON API lives under /api, its OpenAPI schema at /openapi.json.
"""


def create_app(model_files=(), models_dir=None, data_dirs=()):
    """See convscope.web.app.create_app (imported lazily: fastapi is needed only to serve)."""
    from convscope.web.app import create_app as _create_app

    return _create_app(model_files, models_dir, data_dirs)


__all__ = ["create_app"]
