"""Errors as JSON: every 4xx and 5xx answer is `{"error": "<a human sentence>", "status": <code>}`."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class WebError(Exception):
    """A request the explorer refuses: `status` is the HTTP code, `message` the sentence shown in the page."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _field(location) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "form")]
    return ".".join(parts) or "the request"


def validation_message(error: RequestValidationError) -> str:
    """FastAPI's list of validation problems as one sentence: "stride: Input should be ..."."""
    problems = [
        f"{_field(item.get('loc', ()))}: {item.get('msg', 'is not valid')}" for item in error.errors()
    ]
    return "the request is not valid: " + "; ".join(problems)


def install_error_handlers(app: FastAPI) -> None:
    """Make WebError, HTTP errors, validation errors and unexpected exceptions answer in JSON."""

    @app.exception_handler(WebError)
    async def web_error(request: Request, error: WebError):
        return error_response(error.status, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = error.detail if isinstance(error.detail, str) else "the request failed"
        if error.status_code == 404 and message == "Not Found":
            message = f"there is nothing at {request.url.path}"
        return error_response(error.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return error_response(422, validation_message(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        return error_response(500, f"the server failed on this request: {type(error).__name__}: {error}")
