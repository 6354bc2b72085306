"""The HTTP API: the OpenAI routes as the official ``openai`` client expects them, plus metrics and the plan.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (``stream: true`` as
server-sent events ending with ``data: [DONE]``), ``GET /metrics`` (Prometheus text) and ``GET /v1/coldpipe/plan``.
Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}``: 400 for a bad field (``param``
names it) or a prompt too long for the context (``code: context_length_exceeded``), 401 for a missing or wrong
key, 404 for an unknown model, 413 for a body over ``max_body_bytes``, 429 with ``Retry-After`` when the queue is
full, 503 while no plan fits the devices that are up (or a device failed during the request).

A response's headers carry ``x-coldpipe-cold`` (the request's burst loaded blocks), ``x-coldpipe-ttft-measured``
(seconds from its arrival to its first token) and ``x-coldpipe-ttft-predicted`` (the simulator's, see
:mod:`.engine`). A streamed response starts at the first token, so its headers carry them too.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from coldpipe.serve.engine import Engine, NoPlan, QueueFull
from coldpipe.serve.engine import Request as GenRequest
from coldpipe.serve.protocol import Sampling

__all__ = ["ApiError", "make_app"]


class ApiError(Exception):
    """An error answered with OpenAI's body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1, le=1)


class CompletionBody(_Common):
    prompt: str | list[int] | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[dict[str, Any]]


class ChatBody(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


def _param(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("str", "list", "int"))]
    param = ".".join(loc) or None
    return param or "body", f"{param or 'body'}: {err['msg']}"


def make_app(
    engine: Engine,
    tokenizer: Any,
    model_name: str,
    *,
    api_key: str | None = None,
    max_context: int = 2048,
    max_body_bytes: int = 1 << 20,
    default_max_tokens: int = 16,
) -> FastAPI:
    """The FastAPI app serving ``engine`` under ``model_name``."""
    app = FastAPI(title="coldpipe serve", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())
    app.state.model_name = model_name

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        engine.metrics.error(f"http_{exc.status}")
        return exc.response()

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(
                401, "Incorrect or missing API key (send 'Authorization: Bearer KEY').", code="invalid_api_key"
            )

    async def body_of(request: Request, cls: type[BaseModel]) -> Any:
        if int(request.headers.get("content-length") or 0) > max_body_bytes:
            raise ApiError(413, f"the request body is over {max_body_bytes} bytes", code="request_too_large")
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise ApiError(413, f"the request body is over {max_body_bytes} bytes", code="request_too_large")
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, "the body is not valid JSON", param="body") from None
        try:
            body = cls.model_validate(data)
        except ValidationError as exc:
            param, msg = _param(exc)
            raise ApiError(400, msg, param=param) from None
        if body.model != model_name:
            raise ApiError(
                404,
                f"the model {body.model!r} does not exist; this server serves {model_name!r}",
                param="model",
                code="model_not_found",
            )
        return body

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        check_key(request)
        card = {"id": model_name, "object": "model", "created": created, "owned_by": "coldpipe"}
        return JSONResponse({"object": "list", "data": [card]})

    @app.get("/v1/coldpipe/plan")
    async def plan_route(request: Request) -> JSONResponse:
        check_key(request)
        return JSONResponse(engine.plan_info())

    @app.get("/metrics")
    async def metrics(request: Request) -> PlainTextResponse:
        check_key(request)
        return PlainTextResponse(engine.metrics.text(), media_type="text/plain; version=0.0.4")

    async def generate(request: Request, body: Any, ids: list[int], chat: bool, where: str) -> Response:
        max_tokens = (getattr(body, "max_completion_tokens", None) or body.max_tokens) or default_max_tokens
        if len(ids) + max_tokens > max_context:
            raise ApiError(
                400,
                f"this model's context is {max_context} tokens; the prompt has {len(ids)} and max_tokens asks for "
                f"{max_tokens} more",
                param=where,
                code="context_length_exceeded",
            )
        if not ids:
            raise ApiError(400, "the prompt is empty", param=where)
        if any(not 0 <= i < len(tokenizer) for i in ids):
            raise ApiError(400, f"token ids must be in [0, {len(tokenizer)})", param=where)
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        if len(stop) > 4 or any(not s for s in stop):
            raise ApiError(400, "stop: up to 4 non-empty strings", param="stop")
        seed = body.seed if body.seed is not None else secrets.randbits(31)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        req = GenRequest(
            tuple(ids),
            max_tokens,
            Sampling(body.temperature, body.top_p, seed),
            stop,
            emit=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
        )
        try:
            engine.submit(req)
        except QueueFull as exc:
            raise ApiError(
                429,
                str(exc),
                "rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(int(exc.retry_after_s + 0.999))},
            ) from None
        except NoPlan as exc:
            raise ApiError(
                503, f"no plan fits the devices that are up: {exc}", "server_error", code="no_plan"
            ) from None
        try:
            first = await _next(events, request, req)
        except BaseException:
            req.cancel()
            raise
        if first[0] == "error":
            raise ApiError(first[1], first[2], first[3])
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        headers = {
            "x-coldpipe-cold": "true" if req.cold else "false",
            "x-coldpipe-ttft-measured": f"{req.ttft_measured_s:.6f}",
            "x-coldpipe-ttft-predicted": "nan" if req.ttft_predicted_s is None else f"{req.ttft_predicted_s:.6f}",
        }
        usage = lambda: {  # noqa: E731
            "prompt_tokens": len(ids),
            "completion_tokens": len(req.tokens),
            "total_tokens": len(ids) + len(req.tokens),
        }
        stamp = int(time.time())
        if not body.stream:
            text, reason = "", None
            while reason is None:
                ev = await _next(events, request, req)
                if ev[0] == "text":
                    text += ev[1]
                elif ev[0] == "done":
                    reason = ev[1]
                elif ev[0] == "error":
                    raise ApiError(ev[1], ev[2], ev[3])
            choice: dict[str, Any] = {"index": 0, "finish_reason": reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            obj = "chat.completion" if chat else "text_completion"
            out = {
                "id": rid,
                "object": obj,
                "created": stamp,
                "model": model_name,
                "choices": [choice],
                "usage": usage(),
            }
            return JSONResponse(out, headers=headers)

        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def chunk(text: str | None, reason: str | None, role: bool = False) -> str:
            if chat:
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if text:
                    delta["content"] = text
                c: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
                obj = "chat.completion.chunk"
            else:
                c = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
                obj = "text_completion"
            d = {"id": rid, "object": obj, "created": stamp, "model": model_name, "choices": [c]}
            if include_usage:
                d["usage"] = None
            return json.dumps(d)

        async def stream() -> AsyncIterator[dict[str, str]]:
            try:
                if chat:
                    yield {"data": chunk(None, None, role=True)}
                while True:
                    ev = await events.get()
                    if ev[0] == "text":
                        yield {"data": chunk(ev[1], None)}
                    elif ev[0] == "done":
                        yield {"data": chunk(None, ev[1])}
                        break
                    elif ev[0] == "error":
                        yield {
                            "data": json.dumps(
                                {"error": {"message": ev[2], "type": ev[3], "param": None, "code": None}}
                            )
                        }
                        break
                if include_usage:
                    u = {
                        "id": rid,
                        "object": "chat.completion.chunk" if chat else "text_completion",
                        "created": stamp,
                        "model": model_name,
                        "choices": [],
                        "usage": usage(),
                    }
                    yield {"data": json.dumps(u)}
                yield {"data": "[DONE]"}
            finally:
                req.cancel()  # a client that went away frees its place in the burst

        return EventSourceResponse(stream(), headers=headers, ping=15)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        check_key(request)
        body = await body_of(request, CompletionBody)
        p = body.prompt
        if isinstance(p, list) and p and isinstance(p[0], str):
            if len(p) != 1:
                raise ApiError(400, "one prompt per request (batches are not supported)", param="prompt")
            p = p[0]
        ids = list(p) if isinstance(p, list) else list(tokenizer(p)["input_ids"])
        return await generate(request, body, ids, chat=False, where="prompt")

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        check_key(request)
        body = await body_of(request, ChatBody)
        msgs = []
        for m in body.messages:
            content = (
                m.content
                if isinstance(m.content, str)
                else "".join(str(part.get("text", "")) for part in m.content if part.get("type") == "text")
            )
            msgs.append({"role": "system" if m.role == "developer" else m.role, "content": content})
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
        return await generate(request, body, list(ids), chat=True, where="messages")

    return app


async def _next(events: asyncio.Queue[tuple[Any, ...]], request: Request, req: GenRequest) -> tuple[Any, ...]:
    """The next event of ``req``; cancels it (and raises) when its client disconnects while waiting."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), timeout=0.25)
        except TimeoutError:
            if await request.is_disconnected():
                req.cancel()
                raise ApiError(499, "the client closed the request", code="client_closed") from None
