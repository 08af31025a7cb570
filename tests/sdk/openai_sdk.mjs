// Streams one chat completion through Switchboard with the official `openai` Node package.
// Usage: node openai_sdk.mjs BASE_URL API_KEY (run with NODE_PATH pointing at its node_modules).
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const stream = await client.chat.completions.create({
  model: "smart",
  messages: [{ role: "user", content: "hi" }],
  stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
for await (const chunk of stream) {
  for (const c of chunk.choices) text += c.delta?.content ?? "";
  usage = chunk.usage ?? usage;
}
if (text !== "Hello from upstream") throw new Error(`unexpected text ${JSON.stringify(text)}`);
if (!usage || usage.total_tokens <= 0) throw new Error(`no usage: ${JSON.stringify(usage)}`);
console.log("node stream ok");
