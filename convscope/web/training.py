"""Training view API: start a job, follow it live (server-sent events), stop it, save its model."""

import asyncio
import json
from dataclasses import asdict
from typing import Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from convscope.web.datasets import RECIPES
from convscope.web.jobs import TrainingSettings

router = APIRouter(prefix="/api/training", tags=["training"])
POLL_SECONDS = 0.15


class TrainingRequest(BaseModel):
    recipe: str = Field("seed_cnn", description="a built-in architecture: seed_cnn or tiny_cnn")
    dataset: str = Field("digits", description="a data set name from GET /api/training/options")
    epochs: int = Field(5, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=1024)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float | None = Field(None, gt=0, le=10, description="peak learning rate (3e-3 adam, 0.05 sgd)")
    schedule: Literal["onecycle", "cosine", "none"] = "onecycle"
    standardize: bool = Field(True, description="standardise each channel with the training images' stats")
    max_images: int | None = Field(None, ge=1, description="train on the first N images only")
    seed: int = Field(0, ge=0)
    architecture: dict | None = Field(
        None,
        description='a designed network as the model file\'s config holds it: {"name": ..., "layers": '
        '[{"type": "Conv2D", "config": {...}}, ...]}; '
        "checked as POST /api/designer/check does (replaces recipe)",
    )
    flip: bool = Field(False, description="augment: mirror training images left-right at random")
    crop_padding: int = Field(0, ge=0, le=8, description="augment: shift them by up to this many pixels")
    cutout: int = Field(0, ge=0, le=32, description="augment: zero a random square this wide (Cutout)")
    probe_index: int = Field(0, ge=0, le=100_000, description="the test image whose feature maps are drawn")
    client: str | None = Field(None, max_length=40, description="which page started it (shown to others)")


class ResumeRequest(BaseModel):
    epochs: int | None = Field(None, ge=1, le=100, description="epochs in all (default: the run's)")


class SaveRequest(BaseModel):
    name: str = Field(..., description="file name in the models folder, without .convscope")


def _manager(request: Request):
    return request.app.state.trainer


@router.get("/options", summary="Recipes and data sets the server can train")
def options(request: Request) -> dict:
    manager = _manager(request)
    return {
        "recipes": [{"name": name, "description": text} for name, (_, text) in RECIPES.items()],
        "datasets": [{"name": s.name, "description": s.description} for s in manager.sources.values()],
        "defaults": asdict(TrainingSettings()),
        "models_dir": manager.registry.models_dir,
    }


@router.post("", summary="Start training (one job at a time, in a background thread)", status_code=202)
def start(body: TrainingRequest, request: Request) -> dict:
    settings = body.model_dump(exclude={"client"})
    host = request.client.host if request.client else "a client"
    owner = f"{host} ({body.client})" if body.client else host
    job = _manager(request).start(TrainingSettings(**settings), owner)
    return {"id": job.id, "status": job.status}


@router.get("", summary="The current (or last) job: status, settings and every event so far")
def current(request: Request) -> dict:
    job = _manager(request).job
    return {"status": "idle", "events": []} if job is None else job.describe()


@router.post("/stop", summary="Stop the running job between two steps")
def stop(request: Request) -> dict:
    job = _manager(request).stop()
    return {"id": job.id, "status": job.status, "stopping": job.running}


@router.post("/resume", summary="Go on with the last run from the end of its last finished epoch")
def resume(body: ResumeRequest, request: Request) -> dict:
    job = _manager(request).resume(body.epochs)
    return {"id": job.id, "status": job.status, "from_epoch": job.epochs_done, "epochs": job.target_epochs}


@router.get("/runs", summary="The runs of this server session: settings, final figures, per-epoch curves")
def runs(request: Request) -> dict:
    return {"runs": [job.summary() for job in _manager(request).runs]}


@router.post("/save", summary="Save the last job's model into the models folder")
def save(body: SaveRequest, request: Request) -> dict:
    return _manager(request).save(body.name)


def _sse(index: int, event: dict) -> str:
    return f"id: {index}\ndata: {json.dumps(event)}\n\n"


@router.get("/events", summary="The job's events as server-sent events (text/event-stream)")
async def events(request: Request, since: int = 0, last_event_id: str | None = Header(None)):
    """Every event of the current job from `since` on (or after a reconnecting browser's Last-Event-ID),
    then new ones as they come; the stream ends after the job's "end" event ({"type": "idle"} if none)."""
    job = _manager(request).job
    closing = request.app.state.closing
    if last_event_id is not None and last_event_id.isdigit():
        since = max(since, int(last_event_id) + 1)

    async def stream():
        if job is None:
            yield _sse(0, {"type": "idle"})
            return
        index = max(since, 0)
        while True:
            new, ended = job.events_since(index)
            for event in new:
                yield _sse(index, event)
                index += 1
            if ended and not job.events_since(index)[0]:
                return
            if closing.is_set() or await request.is_disconnected():
                return
            await asyncio.sleep(POLL_SECONDS)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
