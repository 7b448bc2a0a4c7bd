// The official openai Node SDK, unchanged, against llmq's HTTP edge.
// Run by tests/it/edge.rs with LLMQ_EDGE_URL, LLMQ_KEY, LLMQ_NARROW_KEY and
// LLMQ_OPENAI_NODE (the installed package's directory) set.

const sdk = require(process.env.LLMQ_OPENAI_NODE);
const OpenAI = sdk.default ?? sdk.OpenAI ?? sdk;

const baseURL = `${process.env.LLMQ_EDGE_URL}/v1`;
const client = new OpenAI({ baseURL, apiKey: process.env.LLMQ_KEY, maxRetries: 0 });
const hello = [{ role: "user", content: "Hello from the Node SDK" }];
const tools = [{
  type: "function",
  function: { name: "lookup", parameters: { type: "object", properties: { query: { type: "string" } } } },
}];
const force = { type: "function", function: { name: "lookup" } };
let passed = 0;

function check(name, condition, detail) {
  if (!condition) {
    console.error(`node sdk: FAILED ${name}: ${JSON.stringify(detail)}`);
    process.exit(1);
  }
  passed += 1;
}

async function expectError(name, errorClass, call) {
  try {
    await call();
  } catch (err) {
    check(name, err instanceof errorClass, `${err?.constructor?.name}: ${err?.message}`);
    return err;
  }
  check(name, false, "expected an error, got an answer");
}

async function main() {
  const answer = await client.chat.completions.create({ model: "chat", messages: hello });
  check("chat", Boolean(answer.choices[0].message.content), answer);

  const { data, response } = await client.chat.completions.create({ model: "chat", messages: hello }).withResponse();
  check("raw headers", response.headers.get("x-llmq-job-id") && response.headers.get("x-llmq-provider") === "mock", [...response.headers]);
  check("raw data", Boolean(data.choices[0].message.content), data);

  let text = "", usage = null, finish = null;
  const stream = await client.chat.completions.create({
    model: "chat", messages: hello, stream: true, stream_options: { include_usage: true },
  });
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta.content ?? "";
      finish = choice.finish_reason ?? finish;
    }
  }
  check("stream text", text.length > 0, text);
  check("stream finish", finish === "stop", finish);
  check("stream usage", usage && usage.completion_tokens > 0, usage);

  const called = await client.chat.completions.create({ model: "chat", messages: hello, tools, tool_choice: force });
  const call = called.choices[0].message.tool_calls[0];
  check("tool call", call.function.name === "lookup", call);
  check("tool arguments", typeof JSON.parse(call.function.arguments) === "object", call.function.arguments);

  const models = [];
  for await (const model of client.models.list()) models.push(model.id);
  check("models", models.includes("chat") && !models.includes("unlisted"), models);

  const bad = new OpenAI({ baseURL, apiKey: `llmq-000000000000-${"0".repeat(64)}`, maxRetries: 0 });
  await expectError("bad key", OpenAI.AuthenticationError, () => bad.chat.completions.create({ model: "chat", messages: hello }));
  const narrow = new OpenAI({ baseURL, apiKey: process.env.LLMQ_NARROW_KEY, maxRetries: 0 });
  await expectError("key narrows", OpenAI.PermissionDeniedError, () => narrow.chat.completions.create({ model: "chat", messages: hello }));
  await expectError("model not allowed", OpenAI.PermissionDeniedError, () => client.chat.completions.create({ model: "unlisted", messages: hello }));
  await expectError("unknown model", OpenAI.NotFoundError, () => client.chat.completions.create({ model: "ghost-model", messages: hello }));
  await expectError("bad request", OpenAI.BadRequestError, () => client.chat.completions.create({ model: "chat", messages: [] }));
  const deadline = await expectError("deadline", OpenAI.InternalServerError, () =>
    client.chat.completions.create({ model: "slow", messages: hello }, { headers: { "x-llmq-timeout": "1s" } }));
  check("deadline status", deadline.status === 504, deadline.status);
  // Errors known before the first token are real HTTP statuses on a stream too, which the
  // SDK classifies and retries (default maxRetries 2: three requests, the mock counts them).
  const retrying = new OpenAI({ baseURL, apiKey: process.env.LLMQ_KEY });
  const broken = await expectError("stream upstream failure", OpenAI.InternalServerError, () =>
    retrying.chat.completions.create({ model: "broken", messages: hello, stream: true }));
  check("stream upstream status", broken.status === 502, broken.status);
  check("stream error ids", broken.headers.get("x-llmq-job-id") && broken.headers.get("x-request-id"), [...broken.headers]);
  const late = await expectError("stream deadline", OpenAI.InternalServerError, () =>
    client.chat.completions.create({ model: "slow", messages: hello, stream: true }, { headers: { "x-llmq-timeout": "1s" } }));
  check("stream deadline status", late.status === 504, late.status);
  await expectError("stream n=2", OpenAI.BadRequestError, () =>
    client.chat.completions.create({ model: "chat", messages: hello, n: 2, stream: true }));

  check("answer model", answer.model === "chat", answer.model);
  check("retrieve", (await client.models.retrieve("chat")).id === "chat");
  check("retrieve with / and .", (await client.models.retrieve("org/chat-1.5")).id === "org/chat-1.5");
  await expectError("retrieve unknown", OpenAI.NotFoundError, () => client.models.retrieve("ghost-model"));
  await expectError("retrieve not allowed", OpenAI.NotFoundError, () => client.models.retrieve("unlisted"));

  await expectError("rate limited", OpenAI.RateLimitError, () => client.chat.completions.create({ model: "limited", messages: hello }));
  const version = require(`${process.env.LLMQ_OPENAI_NODE}/package.json`).version;
  console.log(`node sdk openai ${version}: ${passed} checks passed`);
}

main().catch((err) => {
  console.error(`node sdk: FAILED with ${err?.constructor?.name}: ${err?.message}`);
  process.exit(1);
});
