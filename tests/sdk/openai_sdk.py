"""Drives Switchboard's OpenAI-compatible HTTP surface with the official `openai` Python package.

Usage: openai_sdk.py BASE_URL API_KEY. Exits non-zero (with a traceback) on the first failed check.
The gateway is started by tests/sdk.rs with fake upstreams: group `smart` answers "Hello from upstream"
(and calls any forced tool with {"city": "Paris"}), `limited` is rate limited upstream, `embed` embeds.
"""
import json
import sys

import openai

base_url, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
hi = [{"role": "user", "content": "hi"}]

# Chat, unary, with the gateway's headers visible through the raw response.
raw = client.chat.completions.with_raw_response.create(model="smart", messages=hi, temperature=0.2)
resp = raw.parse()
assert resp.choices[0].message.content == "Hello from upstream", resp
assert resp.choices[0].finish_reason == "stop", resp
assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0, resp.usage
assert raw.headers["x-switchboard-model-group"] == "smart", dict(raw.headers)
assert raw.headers["x-switchboard-attempts"] == "1", dict(raw.headers)
print("chat ok")

# Streaming with the usage chunk.
stream = client.chat.completions.create(
    model="smart", messages=hi, stream=True, stream_options={"include_usage": True}
)
text, usage, finish = "", None, None
for chunk in stream:
    for choice in chunk.choices:
        text += choice.delta.content or ""
        finish = choice.finish_reason or finish
    usage = chunk.usage or usage
assert text == "Hello from upstream", text
assert finish == "stop", finish
assert usage is not None and usage.total_tokens > 0, usage
print("stream ok")

# Tools, unary and streamed (argument fragments assembled by index).
tools = [{
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}]
choice = {"type": "function", "function": {"name": "get_weather"}}
resp = client.chat.completions.create(model="smart", messages=hi, tools=tools, tool_choice=choice)
call = resp.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}, call
assert resp.choices[0].finish_reason == "tool_calls"
calls = {}
for chunk in client.chat.completions.create(model="smart", messages=hi, tools=tools, tool_choice=choice, stream=True):
    for c in chunk.choices:
        for d in c.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = d.id or entry["id"]
            if d.function:
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
assert calls[0]["id"] == "call_fake_1" and calls[0]["name"] == "get_weather", calls
assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}, calls
# A multi-turn conversation carrying the tool result back.
follow = client.chat.completions.create(model="smart", messages=hi + [
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_fake_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_fake_1", "content": "sunny"},
], tools=tools)
assert follow.choices[0].message.content == "Hello from upstream"
print("tools ok")

# Embeddings (the SDK asks for base64 by default and decodes it).
emb = client.embeddings.create(model="embed", input=["a", "bb"])
assert [e.index for e in emb.data] == [0, 1], emb
assert emb.data[1].embedding == [2.0, 1.0, 0.5], emb.data[1].embedding
emb = client.embeddings.create(model="embed", input="ccc", encoding_format="float")
assert emb.data[0].embedding == [3.0, 0.0, 0.5], emb
print("embeddings ok")

# Models.
ids = sorted(m.id for m in client.models.list())
assert ids == ["embed", "limited", "smart"], ids
print("models ok")

# Errors raise the SDK's own exception classes.
def expect(exc, fn, code=None):
    try:
        fn()
    except exc as e:
        if code is not None:
            assert e.code == code, (e.code, e)
        return e
    raise AssertionError(f"expected {exc.__name__}")

bad = openai.OpenAI(base_url=base_url, api_key="sk-wrong", max_retries=0)
expect(openai.AuthenticationError, lambda: bad.chat.completions.create(model="smart", messages=hi), "invalid_api_key")
expect(openai.NotFoundError, lambda: client.chat.completions.create(model="nope", messages=hi), "model_not_found")
e = expect(openai.BadRequestError, lambda: client.chat.completions.create(model="smart", messages=hi, temperature=5))
assert e.param == "temperature", e.param
e = expect(openai.RateLimitError, lambda: client.chat.completions.create(model="limited", messages=hi))
assert int(e.response.headers["retry-after"]) >= 1, dict(e.response.headers)
expect(openai.UnprocessableEntityError, lambda: client.post("/chat/completions", body={"model": "smart", "messages": "hi"}, cast_to=object))
print("errors ok")

# A virtual key from LiteLLM's /key/generate whose budget cannot cover one request: RateLimitError
# with Switchboard's budget_exceeded code, before anything reaches the upstream.
import urllib.request
req = urllib.request.Request(
    base_url.removesuffix("/v1") + "/key/generate", method="POST",
    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    data=json.dumps({"models": ["smart"], "max_budget": 0.000001, "key_alias": "sdk-budget"}).encode())
with urllib.request.urlopen(req) as made:
    tight_key = json.loads(made.read())["key"]
tight = openai.OpenAI(base_url=base_url, api_key=tight_key, max_retries=0)
e = expect(openai.RateLimitError, lambda: tight.chat.completions.create(model="smart", messages=hi, max_tokens=100), "budget_exceeded")
assert "budget" in e.message, e.message
e = expect(openai.PermissionDeniedError, lambda: tight.chat.completions.create(model="embed", messages=hi), "model_not_allowed")
print("budget ok")
print("ALL OK")
