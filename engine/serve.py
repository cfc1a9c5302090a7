"""`toolprm serve`: an OpenAI-compatible chat-completions endpoint (FastAPI on uvicorn).

The model is loaded once. Requests wait in a bounded queue for the one worker
thread that runs ``generate`` (decoding several requests as one batch is not
done: requests run one at a time, each in its own seeded decoder, so nothing
leaks between them and a seed gives the same answer under load as alone). A
full queue answers 429 with ``Retry-After``; a request past its time limit
answers 504 and its generation is cancelled, as is a stream whose client goes
away. Every error is an OpenAI-style error object. Tool schemas and messages
are data: they are parsed and compiled, never evaluated.

Needs the ``serve`` extra: ``pip install 'toolprm[serve]'``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import concurrent.futures
import hmac
import json
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from toolprm.engine.lean import DTYPES
from toolprm.errors import GenerationCancelled, ToolprmError, ToolSchemaError
from toolprm.grammar import normalize_tools

from . import api, openai_format
from .models import DEFAULT_MODEL, get_policy
from .search import STRATEGIES

@dataclass
class ServeConfig:
    model: str | None = None
    dtype: str | None = None        # the policy's weights (engine.lean; None: $TOOLPRM_DTYPE, else auto)
    strategy: str = "fine_beam"
    m: int = 8
    n: int = 2
    max_new_tokens: int = 256       # when a request sets neither max_tokens nor max_completion_tokens
    max_tokens_limit: int = 2048    # the most a request may ask for
    queue_size: int = 8             # requests waiting (besides the one running)
    timeout: float = 300.0          # seconds per request, waiting included
    max_body_bytes: int = 1 << 20
    max_tools: int = 128
    max_choices: int = 4
    api_key: str | None = None

    @property
    def model_name(self) -> str:
        return self.model or DEFAULT_MODEL


# ---------------------------------------------------------------- the request schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Strict):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(_Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    """OpenAI's chat-completions request, the part toolprm serves, plus its own
    options (``strategy``, ``m``, ``n_beams``, ``scorer``, ``trace``)."""
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # toolprm's own
    strategy: str | None = None
    m: int | None = Field(None, ge=1, le=64)
    n_beams: int | None = Field(None, ge=1, le=16)
    scorer: Literal[api.SCORERS] | None = None
    trace: bool = False


# ---------------------------------------------------------------- errors
class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc) or "body"
    if first.get("type") == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('msg')}", code="invalid_json")
    if not loc:
        return ApiError(400, "the body must be a JSON object (sent as Content-Type: application/json)",
                        code="invalid_json")
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ApiError(400, f"{where}: {first.get('msg')}{more}", param=where or None, code="invalid_value")


# ---------------------------------------------------------------- the worker
class Job:
    def __init__(self, fn: Callable[[threading.Event], Any]):
        self.fn = fn
        self.cancel = threading.Event()
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class Worker:
    """One thread runs the jobs, in order, from a bounded queue."""

    def __init__(self, queue_size: int):
        self.jobs: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.busy_since: float | None = None
        self.thread = threading.Thread(target=self._loop, name="toolprm-worker", daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[[threading.Event], Any]) -> Job:
        job = Job(fn)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ApiError(429, f"the server is busy: {self.jobs.maxsize} requests are already waiting; "
                                f"retry later", type_="rate_limit_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        return job

    def stop(self) -> None:
        self.jobs.put(None)

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            # a request that timed out (or went away) while waiting is dropped unrun
            if job.cancel.is_set():
                job.future.cancel()
            if not job.future.set_running_or_notify_cancel():
                continue
            self.busy_since = time.monotonic()
            try:
                job.future.set_result(job.fn(job.cancel))
            except BaseException as e:  # handed to the request that asked
                job.future.set_exception(e)
            finally:
                self.busy_since = None


# ---------------------------------------------------------------- the app
def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app; loads the model now (once)."""
    config = config or ServeConfig()
    if config.strategy not in STRATEGIES:
        raise ToolprmError(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    policy = get_policy(config.model, config.dtype)
    worker = Worker(config.queue_size)
    defaults = {"strategy": config.strategy, "m": config.m, "n": config.n,
                "max_new_tokens": config.max_new_tokens}
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.stop()

    app = FastAPI(title="toolprm", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions with schema-constrained tool calls")
    app.state.config, app.state.worker, app.state.policy = config, worker, policy

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return _validation_error(exc).response()

    @app.exception_handler(404)
    async def _not_found(request: Request, exc):
        return ApiError(404, f"no route {request.method} {request.url.path}", code="not_found").response()

    @app.exception_handler(405)
    async def _not_allowed(request: Request, exc):
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                        code="method_not_allowed").response()

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        if config.api_key and request.url.path.startswith("/v1/"):
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                return ApiError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                                type_="authentication_error", code="invalid_api_key").response()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            return ApiError(413, f"the body is larger than {config.max_body_bytes} bytes",
                            code="body_too_large").response()
        if request.method == "POST" and length is None:
            return ApiError(411, "send the body with a Content-Length header", code="length_required").response()
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_name, "waiting": worker.jobs.qsize(),
                "busy": worker.busy_since is not None}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "toolprm"}]}

    @app.post("/v1/chat/completions")
    async def completions(req: ChatRequest):
        body = req.model_dump()
        p = _checked_plan(body, config, defaults)
        created = int(time.time())
        rid = "chatcmpl-" + uuid.uuid4().hex
        if req.stream:
            loop = asyncio.get_running_loop()
            events: asyncio.Queue = asyncio.Queue()

            def on_step(step: dict) -> None:
                loop.call_soon_threadsafe(events.put_nowait, ("step", step))

            job = worker.submit(lambda cancel: _run(policy, p, cancel, on_step=on_step))
            job.future.add_done_callback(lambda f: loop.call_soon_threadsafe(events.put_nowait, ("done", f)))
            return StreamingResponse(_stream(job, events, config, p, body, rid, created),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        job = worker.submit(lambda cancel: [_run(policy, p, cancel, seed_offset=i) for i in range(req.n)])
        results = await _wait(job, config.timeout)
        choices = [openai_format.choice(i, r, p.options["max_new_tokens"]) for i, r in enumerate(results)]
        if req.trace:
            for c, r in zip(choices, results):
                c["toolprm"] = {"steps": r.steps, "stats": r.stats, "strategy": r.strategy, "text": r.text}
        prompt = results[0].stats.get("prompt_tokens", 0)
        completion = sum(len(r.token_ids) for r in results)
        return {"id": rid, "object": "chat.completion", "created": created, "model": config.model_name,
                "system_fingerprint": None, "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    return app


def _checked_plan(body: dict, config: ServeConfig, defaults: dict) -> openai_format.Plan:
    """The request's plan, with the server's limits and early checks of what the
    worker would otherwise refuse late (the tool schemas compile now)."""
    if body.get("model") not in (None, config.model_name):
        raise ApiError(404, f"model {body['model']!r} is not served here; this server serves "
                            f"{config.model_name!r}", param="model", code="model_not_found")
    tools = body.get("tools") or []
    if len(tools) > config.max_tools:
        raise ApiError(400, f"tools: {len(tools)} tools is more than this server's limit of {config.max_tools}",
                       param="tools", code="too_many_tools")
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    if asked is not None and asked > config.max_tokens_limit:
        raise ApiError(400, f"max_tokens: {asked} is more than this server's limit of {config.max_tokens_limit}",
                       param="max_tokens", code="invalid_value")
    if body["n"] > config.max_choices:
        raise ApiError(400, f"n: {body['n']} is more than this server's limit of {config.max_choices}",
                       param="n", code="invalid_value")
    if body["stream"] and body["n"] > 1:
        raise ApiError(400, "n: streaming answers one choice; n must be 1 with stream", param="n")
    if body.get("strategy") is not None and body["strategy"] not in STRATEGIES:
        raise ApiError(400, f"strategy: unknown strategy {body['strategy']!r}; choose one of "
                            f"{', '.join(STRATEGIES)}", param="strategy")
    try:
        p = openai_format.plan(body, defaults)
        if p.calls is not None:
            normalize_tools(p.tools)
    except ToolprmError as e:
        raise _bad_request(e) from None
    return p


def _bad_request(e: ToolprmError, code: str | None = None) -> ApiError:
    if isinstance(e, ToolSchemaError):
        return ApiError(400, f"tools: {e}", param="tools", code="invalid_tool_schema")
    return ApiError(400, str(e), code=code)


def _timed_out(timeout: float) -> ApiError:
    return ApiError(504, f"the request took longer than this server's limit of {timeout:g} s; "
                         f"its generation was stopped", type_="timeout_error", code="timeout")


def _run(policy, p: openai_format.Plan, cancel: threading.Event, seed_offset: int = 0,
         on_step: Callable[[dict], None] | None = None):
    options = dict(p.options)
    options["seed"] = options.get("seed", 0) + seed_offset
    reply = {k: options[k] for k in ("max_new_tokens", "temperature", "top_p", "seed") if k in options}
    if p.calls is None:
        return api.chat(p.messages, model=policy, cancel=cancel, **reply)
    extra = {"max_calls": p.max_calls} if p.max_calls else {}
    result = api.generate(p.messages, p.tools, model=policy, calls=p.calls, tool=p.tool, cancel=cancel,
                          on_step=on_step, **extra, **options)
    if result.calls == []:  # no tool fits: answer in words, as an OpenAI model would
        return api.chat(p.messages, model=policy, cancel=cancel, **reply)
    return result


async def _wait(job: Job, timeout: float):
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout)
    except asyncio.TimeoutError:
        job.cancel.set()
        raise _timed_out(timeout) from None
    except asyncio.CancelledError:  # the client went away
        job.cancel.set()
        raise
    except GenerationCancelled as e:
        raise ApiError(504, str(e), type_="timeout_error", code="timeout") from None
    except ToolprmError as e:
        raise _bad_request(e, "generation_failed") from None


def _chunk(rid: str, created: int, model: str, delta: dict, reason: str | None = None) -> str:
    return _event({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": None,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]})


def _event(body: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(job: Job, events: asyncio.Queue, config: ServeConfig, p: openai_format.Plan, body: dict,
                  rid: str, created: int):
    """Server-sent events in OpenAI's chunk format: the role, then each tool call's
    name and arguments as the search settles them (or the reply text), the finish
    reason, usage when asked, then ``[DONE]``. A client that goes away cancels."""
    args = openai_format.ArgumentStream()
    model = config.model_name
    try:
        yield _chunk(rid, created, model, {"role": "assistant", "content": None})
        deadline = time.monotonic() + config.timeout
        while True:
            try:
                kind, item = await asyncio.wait_for(events.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                job.cancel.set()
                yield _event(_timed_out(config.timeout).body())
                break
            if kind == "step":
                for d in args.deltas(item):
                    yield _chunk(rid, created, model, {"tool_calls": [d]})
                continue
            try:
                result = item.result()
            except ToolprmError as e:
                yield _event(_bad_request(e, "generation_failed").body())
                break
            if not result.calls:
                yield _chunk(rid, created, model, {"content": result.text})
            reason = openai_format.choice(0, result, p.options["max_new_tokens"])["finish_reason"]
            yield _chunk(rid, created, model, {}, reason)
            if (body.get("stream_options") or {}).get("include_usage"):
                prompt, completion = result.stats.get("prompt_tokens", 0), len(result.token_ids)
                usage = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                                  "total_tokens": prompt + completion}}
                yield _event(usage)
            break
        yield "data: [DONE]\n\n"
    finally:
        if not job.future.done():
            job.cancel.set()  # the client went away (or the stream ended early)


# ---------------------------------------------------------------- the command
def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="toolprm serve", description=(
        "An OpenAI-compatible chat-completions server (POST /v1/chat/completions, GET /v1/models, "
        "GET /health). Binds to 127.0.0.1 unless --host says otherwise."))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--model", default=None, help="model name or path (default: embedded SmolLM2-135M)")
    ap.add_argument("--dtype", default=None, choices=DTYPES,
                    help="the policy's weights: auto (default), float32, bfloat16 or int4")
    ap.add_argument("--strategy", default="fine_beam", choices=STRATEGIES,
                    help="default strategy; a request may set its own (default fine_beam)")
    ap.add_argument("-m", type=int, default=8, help="samples per beam per step (default 8)")
    ap.add_argument("-n", type=int, default=2, help="beams kept (default 2)")
    ap.add_argument("--max-new-tokens", type=int, default=256,
                    help="tokens per answer when a request does not say (default 256)")
    ap.add_argument("--max-tokens-limit", type=int, default=2048, help="the most a request may ask for")
    ap.add_argument("--queue-size", type=int, default=8,
                    help="requests that may wait while one runs; more are answered 429 (default 8)")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds per request, waiting included; past it 504 (default 300)")
    ap.add_argument("--max-body-bytes", type=int, default=1 << 20)
    ap.add_argument("--max-tools", type=int, default=128)
    ap.add_argument("--api-key", default=os.environ.get("TOOLPRM_API_KEY"),
                    help="require Authorization: Bearer KEY (default: $TOOLPRM_API_KEY; none when unset)")
    ap.add_argument("--log-level", default="info")
    a = ap.parse_args(argv)
    for name in ("port", "m", "n", "max_new_tokens", "max_tokens_limit", "queue_size", "max_body_bytes",
                 "max_tools"):
        if getattr(a, name) < (0 if name == "port" else 1):
            raise ToolprmError(f"--{name.replace('_', '-')} must be positive, got {getattr(a, name)}")
    import uvicorn

    config = ServeConfig(model=a.model, dtype=a.dtype, strategy=a.strategy, m=a.m, n=a.n, max_new_tokens=a.max_new_tokens,
                         max_tokens_limit=a.max_tokens_limit, queue_size=a.queue_size, timeout=a.timeout,
                         max_body_bytes=a.max_body_bytes, max_tools=a.max_tools, api_key=a.api_key)
    app = create_app(config)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level)
    return 0
