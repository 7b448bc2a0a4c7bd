"""The official openai Python SDK sending one large image message through llmq's edge.

Run by tests/it/sizes/requests.rs with LLMQ_EDGE_URL and LLMQ_KEY set: a 3 MiB base64
image (over one NATS message, under the edge's 4 MiB) is answered; one over 4 MiB is
refused with 413 and the limit in the message. Exits non-zero with what failed.
"""

import os
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["LLMQ_EDGE_URL"] + "/v1", api_key=os.environ["LLMQ_KEY"], max_retries=0)


def image_message(megabytes):
    data = "A" * int(megabytes * 1024 * 1024)
    return [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image? [tokens=3]"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}},
    ]}]


answer = client.chat.completions.create(model="chat", messages=image_message(3))
if not answer.choices[0].message.content:
    sys.exit(f"python sdk: no answer to a 3 MiB image: {answer}")

try:
    client.chat.completions.create(model="chat", messages=image_message(4.1))
    sys.exit("python sdk: a body over 4 MiB was accepted")
except openai.APIStatusError as err:
    if err.status_code != 413 or "4194304" not in str(err):
        sys.exit(f"python sdk: expected 413 naming 4194304, got {err.status_code}: {err}")

print("python sdk: large image answered, over-limit body refused with 413")
