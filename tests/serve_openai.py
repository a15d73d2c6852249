"""Drives `chatglm serve` with the official `openai` client (run by tests/serve.rs when
CHATGLM_OPENAI_PYTHON names a Python that has it). Usage: serve_openai.py BASE_URL API_KEY"""

import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base_url, api_key=key)
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]

whole = client.chat.completions.create(
    model="any", messages=messages, max_tokens=8, temperature=0, seed=1)
choice = whole.choices[0]
assert choice.message.role == "assistant"
assert choice.finish_reason in ("stop", "length"), choice.finish_reason
assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
        model="any", messages=messages, max_tokens=8, temperature=0, seed=1, stream=True,
        stream_options={"include_usage": True}):
    if chunk.usage:
        usage = chunk.usage
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
assert text == choice.message.content, (text, choice.message.content)
assert finish == choice.finish_reason
assert usage.completion_tokens == whole.usage.completion_tokens

tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
r = client.chat.completions.create(model="any", tools=tools, max_tokens=4, messages=[
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "c1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "21 C"}])
assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")

done = client.completions.create(model="any", prompt="Once", max_tokens=4)
assert done.usage.completion_tokens <= 4
assert [m.id for m in client.models.list()]

try:
    client.chat.completions.create(model="any", messages=messages, n=2)
    raise AssertionError("n=2 was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "n", e.body
try:
    OpenAI(base_url=base_url, api_key="wrong").models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError:
    pass
print("openai client: all checks passed")
