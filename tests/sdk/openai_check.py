"""The official openai Python SDK, unchanged, against llmq's HTTP edge.

Run by tests/it/edge.rs with LLMQ_EDGE_URL, LLMQ_KEY and LLMQ_NARROW_KEY set; exits
non-zero (with what failed) unless every check passes.
"""

import json
import os
import sys

import openai
from openai import OpenAI

BASE = os.environ["LLMQ_EDGE_URL"] + "/v1"
client = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_KEY"], max_retries=0)
HELLO = [{"role": "user", "content": "Hello from the Python SDK"}]
TOOLS = [{
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}]
FORCE = {"type": "function", "function": {"name": "lookup"}}
passed = []


def check(name, condition, detail=""):
    if not condition:
        print(f"python sdk: FAILED {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    passed.append(name)


def expect_error(name, error_class, call):
    try:
        call()
    except error_class as err:
        check(name, err.status_code >= 400, repr(err))
        return err
    except Exception as err:  # noqa: BLE001 - report what came instead
        check(name, False, f"expected {error_class.__name__}, got {type(err).__name__}: {err}")
    check(name, False, f"expected {error_class.__name__}, got an answer")


answer = client.chat.completions.create(model="chat", messages=HELLO)
check("chat", bool(answer.choices[0].message.content), answer)
check("chat usage", answer.usage is not None and answer.usage.total_tokens > 0, answer.usage)

raw = client.chat.completions.with_raw_response.create(model="chat", messages=HELLO)
check("raw headers", raw.headers.get("x-llmq-job-id") and raw.headers.get("x-llmq-provider") == "mock", dict(raw.headers))
check("raw parse", bool(raw.parse().choices[0].message.content))

text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
    model="chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
):
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
check("stream text", bool(text))
check("stream finish", finish == "stop", finish)
check("stream usage", usage is not None and usage.completion_tokens > 0, usage)

called = client.chat.completions.create(model="chat", messages=HELLO, tools=TOOLS, tool_choice=FORCE)
call = called.choices[0].message.tool_calls[0]
check("tool call", call.function.name == "lookup", call)
check("tool arguments", isinstance(json.loads(call.function.arguments), dict), call.function.arguments)

name, arguments = None, ""
for chunk in client.chat.completions.create(
    model="chat", messages=HELLO, tools=TOOLS, tool_choice=FORCE, stream=True
):
    for choice in chunk.choices:
        for delta in choice.delta.tool_calls or []:
            check("streamed tool index", delta.index == 0, delta)
            name = (delta.function.name if delta.function else None) or name
            arguments += (delta.function.arguments or "") if delta.function else ""
check("streamed tool call", name == "lookup", name)
check("streamed tool arguments", isinstance(json.loads(arguments), dict), arguments)

ids = [model.id for model in client.models.list()]
check("models", "chat" in ids and "unlisted" not in ids, ids)

bad = OpenAI(base_url=BASE, api_key="llmq-000000000000-" + "0" * 64, max_retries=0)
expect_error("bad key", openai.AuthenticationError, lambda: bad.chat.completions.create(model="chat", messages=HELLO))
narrow = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_NARROW_KEY"], max_retries=0)
expect_error("key narrows", openai.PermissionDeniedError, lambda: narrow.chat.completions.create(model="chat", messages=HELLO))
expect_error("model not allowed", openai.PermissionDeniedError, lambda: client.chat.completions.create(model="unlisted", messages=HELLO))
expect_error("unknown model", openai.NotFoundError, lambda: client.chat.completions.create(model="ghost-model", messages=HELLO))
expect_error("bad request", openai.BadRequestError, lambda: client.chat.completions.create(model="chat", messages=[]))
deadline = expect_error(
    "deadline",
    openai.InternalServerError,
    lambda: client.chat.completions.create(
        model="slow", messages=HELLO, extra_headers={"x-llmq-timeout": "1s"}
    ),
)
check("deadline status", deadline.status_code == 504, deadline.status_code)

# Errors known before the first token are real HTTP statuses on a stream too, which the SDK
# classifies and retries (default max_retries=2: three requests, the mock counts them).
retrying = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_KEY"])
broken = expect_error(
    "stream upstream failure",
    openai.InternalServerError,
    lambda: retrying.chat.completions.create(model="broken", messages=HELLO, stream=True),
)
check("stream upstream status", broken.status_code == 502, broken.status_code)
check("stream error ids", broken.response.headers.get("x-llmq-job-id") and broken.response.headers.get("x-request-id"), dict(broken.response.headers))
check("stream retried", broken.response.request.headers.get("x-stainless-retry-count") == "2", dict(broken.response.request.headers))
late = expect_error(
    "stream deadline",
    openai.InternalServerError,
    lambda: client.chat.completions.create(
        model="slow", messages=HELLO, stream=True, extra_headers={"x-llmq-timeout": "1s"}
    ),
)
check("stream deadline status", late.status_code == 504, late.status_code)
expect_error("stream n=2", openai.BadRequestError, lambda: client.chat.completions.create(model="chat", messages=HELLO, n=2, stream=True))

check("answer model", answer.model == "chat", answer.model)
check("retrieve", client.models.retrieve("chat").id == "chat")
check("retrieve with / and .", client.models.retrieve("org/chat-1.5").id == "org/chat-1.5")
expect_error("retrieve unknown", openai.NotFoundError, lambda: client.models.retrieve("ghost-model"))
expect_error("retrieve not allowed", openai.NotFoundError, lambda: client.models.retrieve("unlisted"))

client.chat.completions.create(model="limited", messages=HELLO)
limited = expect_error("rate limited", openai.RateLimitError, lambda: client.chat.completions.create(model="limited", messages=HELLO))
check("retry-after", limited.response.headers.get("retry-after") is not None, dict(limited.response.headers))

print(f"python sdk openai {openai.__version__}: {len(passed)} checks passed")
