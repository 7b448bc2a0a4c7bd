"""The official openai Python SDK against a model whose only deployment cools down.

Run by tests/it/edge.rs with LLMQ_EDGE_URL and LLMQ_KEY set, after the test scripted one
401 from the upstream for model `fragile` (which cools its one deployment down for the
stack's `cooldown.duration`, 3 s). Exits non-zero (with what failed) unless every check
passes; prints what it measured.
"""

import os
import sys
import time

import openai
from openai import OpenAI

BASE = os.environ["LLMQ_EDGE_URL"] + "/v1"
HELLO = [{"role": "user", "content": "Hello from the cooldown check"}]
once = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_KEY"], max_retries=0)
retrying = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_KEY"])


def fail(name, detail):
    print(f"cooldown check: FAILED {name}: {detail}", file=sys.stderr)
    sys.exit(1)


def status_error(name, call):
    started = time.monotonic()
    try:
        call()
    except openai.APIStatusError as err:
        return err, time.monotonic() - started
    fail(name, "expected an APIStatusError, got an answer")


# The upstream's 401: the deployment cools down.
err, _ = status_error("the fault", lambda: once.chat.completions.create(model="fragile", messages=HELLO))
if err.status_code != 502:
    fail("the fault", f"status {err.status_code}")

# The next interactive request fails at once, saying when to come back.
err, took = status_error("cooling", lambda: once.chat.completions.create(model="fragile", messages=HELLO))
if not isinstance(err, openai.InternalServerError) or err.status_code != 503:
    fail("cooling", f"{type(err).__name__} {err.status_code}")
if took > 1.0:
    fail("cooling at once", f"took {took:.2f} s")
retry_after_ms = int(err.response.headers.get("retry-after-ms", "0"))
if not 0 < retry_after_ms <= 3000 or err.response.headers.get("retry-after") is None:
    fail("retry headers", dict(err.response.headers))

# With its default retries the SDK waits what the edge said, once, and gets the answer.
started = time.monotonic()
answer = retrying.chat.completions.create(model="fragile", messages=HELLO)
took = time.monotonic() - started
if not answer.choices[0].message.content:
    fail("answer after the cooldown", answer)
if took > retry_after_ms / 1000 + 1.5:
    fail("one wait", f"took {took:.2f} s for a retry-after of {retry_after_ms} ms")
print(
    f"cooldown check openai {openai.__version__}: 503 in under 1 s with retry-after-ms "
    f"{retry_after_ms}; with default retries the call took {took:.2f} s and succeeded"
)
