"""The official openai Python SDK's Files and Batches calls, unchanged, against llmq's edge.

Run by tests/it/edge_batches.rs with LLMQ_EDGE_URL, LLMQ_KEY (tenant acme) and
LLMQ_OTHER_KEY (tenant beta) set; exits non-zero (with what failed) unless every check
passes.
"""

import io
import json
import os
import sys
import time

import openai
from openai import OpenAI

BASE = os.environ["LLMQ_EDGE_URL"] + "/v1"
client = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_KEY"], max_retries=0)
other = OpenAI(base_url=BASE, api_key=os.environ["LLMQ_OTHER_KEY"], max_retries=0)
passed = []


def check(name, condition, detail=""):
    if not condition:
        print(f"python sdk batches: FAILED {name}: {detail}", file=sys.stderr)
        sys.exit(1)
    passed.append(name)


def not_found(name, call):
    try:
        call()
    except openai.NotFoundError:
        passed.append(name)
        return
    except Exception as err:  # noqa: BLE001
        check(name, False, repr(err))
    check(name, False, "no error")


def jsonl(lines):
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def request(custom_id, prompt, model="chat"):
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": prompt}]}}


def wait(batch_id, until=("completed", "failed", "expired", "cancelled")):
    deadline = time.time() + 90
    while time.time() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        time.sleep(0.2)
    check("batch finished", False, batch_id)


lines = [request(f"py-{i}", f"python line {i}") for i in range(5)]
uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
check("file id", uploaded.id.startswith("file-"), uploaded)
check("file bytes", uploaded.bytes == len(jsonl(lines)), uploaded)
check("file purpose", uploaded.purpose == "batch" and uploaded.filename == "requests.jsonl", uploaded)
check("file retrieve", client.files.retrieve(uploaded.id).id == uploaded.id)
check("file list", uploaded.id in [f.id for f in client.files.list()])

batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                              completion_window="24h", metadata={"run": "python"})
check("batch id", batch.id.startswith("batch_") and batch.object == "batch", batch)
check("batch created", batch.status in ("validating", "in_progress"), batch.status)
done = wait(batch.id)
check("batch completed", done.status == "completed", done)
counts = done.request_counts
check("request counts", (counts.total, counts.completed, counts.failed) == (5, 5, 0), counts)
check("metadata kept", done.metadata == {"run": "python"}, done.metadata)
check("times", done.completed_at and done.created_at <= done.completed_at, done)
check("no error file", done.error_file_id is None, done.error_file_id)
output = client.files.content(done.output_file_id).text.splitlines()
check("one output line per input line", len(output) == 5, output)
outputs = [json.loads(line) for line in output]
check("input order", [o["custom_id"] for o in outputs] == [f"py-{i}" for i in range(5)], outputs)
check("answers", all(o["response"]["status_code"] == 200 and o["response"]["body"]["choices"][0]["message"]["content"] for o in outputs), outputs[0])
check("batch list", batch.id in [b.id for b in client.batches.list()])

# Another tenant's key sees nothing of acme's.
not_found("other tenant: batch", lambda: other.batches.retrieve(batch.id))
not_found("other tenant: cancel", lambda: other.batches.cancel(batch.id))
not_found("other tenant: file", lambda: other.files.retrieve(uploaded.id))
not_found("other tenant: output", lambda: other.files.content(done.output_file_id))
check("other tenant: list", batch.id not in [b.id for b in other.batches.list()])
not_found("unknown batch", lambda: client.batches.retrieve("batch_0000"))

# A refused input: the batch fails with its lines' problems, nothing runs.
bad = client.files.create(file=("bad.jsonl", io.BytesIO(jsonl([request("a", "x"), request("a", "dup")]) + b"{oops\n")), purpose="batch")
failed = wait(client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h").id)
check("refused input fails", failed.status == "failed", failed)
check("errors name lines", sorted(e.line for e in failed.errors.data) == [2, 3], failed.errors)

# Cancelled at once: ends cancelled.
slow = client.files.create(file=("slow.jsonl", io.BytesIO(jsonl([request(f"s{i}", f"slow {i}", model="slow") for i in range(20)]))), purpose="batch")
created = client.batches.create(input_file_id=slow.id, endpoint="/v1/chat/completions", completion_window="24h")
cancelling = client.batches.cancel(created.id)
check("cancel answers", cancelling.status in ("cancelling", "cancelled"), cancelling.status)
cancelled = wait(created.id)
check("cancelled", cancelled.status == "cancelled", cancelled)

try:
    client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    check("other endpoint refused", False, "accepted")
except openai.BadRequestError:
    passed.append("other endpoint refused")

deleted = client.files.delete(uploaded.id)
check("file deleted", deleted.deleted and deleted.id == uploaded.id, deleted)
not_found("deleted file", lambda: client.files.retrieve(uploaded.id))
print(f"python sdk batches: {len(passed)} checks passed (openai {openai.__version__})")
