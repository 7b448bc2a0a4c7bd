// The official openai Node SDK's Files and Batches calls, unchanged, against llmq's edge.
// Run by tests/it/edge_batches.rs with LLMQ_EDGE_URL, LLMQ_KEY (tenant acme),
// LLMQ_OTHER_KEY (tenant beta) and LLMQ_OPENAI_NODE (the installed package's directory).

const sdk = require(process.env.LLMQ_OPENAI_NODE);
const OpenAI = sdk.default ?? sdk.OpenAI ?? sdk;
const { toFile } = sdk;

const baseURL = `${process.env.LLMQ_EDGE_URL}/v1`;
const client = new OpenAI({ baseURL, apiKey: process.env.LLMQ_KEY, maxRetries: 0 });
const other = new OpenAI({ baseURL, apiKey: process.env.LLMQ_OTHER_KEY, maxRetries: 0 });
let passed = 0;

function check(name, condition, detail) {
  if (!condition) {
    console.error(`node sdk batches: FAILED ${name}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  passed += 1;
}

async function notFound(name, call) {
  try {
    await call();
  } catch (err) {
    check(name, err instanceof OpenAI.NotFoundError, `${err?.constructor?.name}: ${err?.message}`);
    return;
  }
  check(name, false, "no error");
}

const request = (customId, prompt) => ({
  custom_id: customId, method: "POST", url: "/v1/chat/completions",
  body: { model: "chat", messages: [{ role: "user", content: prompt }] },
});
const jsonl = (lines) => lines.map((line) => JSON.stringify(line) + "\n").join("");

async function wait(id) {
  const deadline = Date.now() + 90_000;
  while (Date.now() < deadline) {
    const batch = await client.batches.retrieve(id);
    if (["completed", "failed", "expired", "cancelled"].includes(batch.status)) return batch;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  check("batch finished", false, id);
}

(async () => {
  const lines = [0, 1, 2, 3].map((i) => request(`js-${i}`, `node line ${i}`));
  const uploaded = await client.files.create({ file: await toFile(Buffer.from(jsonl(lines)), "requests.jsonl"), purpose: "batch" });
  check("file", uploaded.id.startsWith("file-") && uploaded.purpose === "batch", uploaded);
  const batch = await client.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
  check("batch created", ["validating", "in_progress"].includes(batch.status), batch);
  const done = await wait(batch.id);
  check("completed", done.status === "completed", done);
  check("counts", done.request_counts.total === 4 && done.request_counts.completed === 4, done.request_counts);
  const content = await (await client.files.content(done.output_file_id)).text();
  const outputs = content.trim().split("\n").map((line) => JSON.parse(line));
  check("outputs in order", outputs.map((o) => o.custom_id).join() === "js-0,js-1,js-2,js-3", outputs);
  check("answers", outputs.every((o) => o.response.status_code === 200 && o.error === null), outputs[0]);
  const listed = [];
  for await (const item of client.batches.list()) listed.push(item.id);
  check("list", listed.includes(batch.id), listed);
  await notFound("other tenant: batch", () => other.batches.retrieve(batch.id));
  await notFound("other tenant: file", () => other.files.content(done.output_file_id));
  const created = await client.batches.create({ input_file_id: uploaded.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
  const cancelling = await client.batches.cancel(created.id);
  check("cancel", ["cancelling", "cancelled", "completed"].includes(cancelling.status), cancelling.status);
  const deleted = await client.files.del ? await client.files.del(uploaded.id) : await client.files.delete(uploaded.id);
  check("deleted", deleted.deleted === true, deleted);
  console.log(`node sdk batches: ${passed} checks passed`);
})().catch((err) => {
  console.error(`node sdk batches: FAILED with ${err?.constructor?.name}: ${err?.message}`);
  process.exit(1);
});
