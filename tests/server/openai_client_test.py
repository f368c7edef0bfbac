#!/usr/bin/env python3
"""`megamoe serve` through the official `openai` Python client (optional test).

Usage: openai_client_test.py MEGAMOE_BINARY TEST_DATA_DIR
Exits 77 (skipped) when the `openai` package is not importable. scripts/test.sh
installs it (pinned) with scripts/fetch_openai_client.sh and points
MEGAMOE_OPENAI_SITE at it.
"""
import json
import os
import signal
import subprocess
import sys

if os.environ.get("MEGAMOE_OPENAI_SITE"):
    sys.path.insert(0, os.environ["MEGAMOE_OPENAI_SITE"])

try:
    import openai
except ImportError:
    print("skipped: the openai package is not importable (export MEGAMOE_OPENAI_SITE=$(bash scripts/fetch_openai_client.sh))")
    sys.exit(77)

binary, data = sys.argv[1], sys.argv[2]
proc = subprocess.Popen(
    [binary, "serve", "--model", f"{data}/tiny-text", "--tokenizer", f"{data}/tiny-tokenizer/tokenizer.json",
     "--device", "cpu", "--port", "0", "--api-key", "k", "--served-model-name", "tiny", "--max-batch", "4"],
    stderr=subprocess.PIPE, text=True)
port = None
for line in proc.stderr:
    if "listening on http://127.0.0.1:" in line:
        port = int(line.rsplit(":", 1)[1])
        break
assert port, "the server did not start"
client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


extra = {"ignore_eos": True}
msgs = [{"role": "user", "content": "Hello there"}]
check([m.id for m in client.models.list().data] == ["tiny"], "models lists the served model")

plain = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=12, temperature=0, extra_body=extra)
check(plain.choices[0].finish_reason == "length", "chat finish_reason length")
check(plain.usage.completion_tokens == 12, "chat usage")
check(plain.choices[0].message.role == "assistant", "chat role")

for sampling in ({"temperature": 0}, {"temperature": 0.9, "seed": 3, "top_p": 0.95}):
    whole = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=16, extra_body=extra, **sampling)
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=16, extra_body=extra, stream=True,
                                            stream_options={"include_usage": True}, **sampling)
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    check(text == whole.choices[0].message.content, f"streamed == non-streamed text for {sampling}")
    check(usage is not None and usage.completion_tokens == 16, "include_usage chunk")
    check(finish == "length", "streamed finish_reason")

thinking = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                          extra_body={"ignore_eos": True, "chat_template_kwargs": {"thinking": True}})
check(bool(getattr(thinking.choices[0].message, "reasoning_content", None)), "reasoning_content in thinking mode")

comp = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0,
                                 extra_body=extra)
check(comp.usage.completion_tokens == 10 and comp.choices[0].text, "completions")
full = comp.choices[0].text
stop = next((full[i:i + 2] for i in range(2, len(full) - 1) if full[i:i + 2].isalpha() and full[i:i + 2].isascii()), None)
if stop:
    stopped = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0,
                                        stop=[stop], extra_body=extra)
    check(stopped.choices[0].text == full[:full.index(stop)] and stopped.choices[0].finish_reason == "stop",
          "stop string")

lp = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=5, temperature=0, logprobs=True,
                                    top_logprobs=2, extra_body=extra)
content = lp.choices[0].logprobs.content
check(len(content) == 5 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content), "logprobs")

choices = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, n=3, temperature=0.9, seed=5,
                                         extra_body=extra).choices
check([c.index for c in choices] == [0, 1, 2] and len({c.message.content for c in choices}) == 3,
      "n=3: three distinct seeded choices")
penalised = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                           presence_penalty=2, frequency_penalty=1, logit_bias={"100": -100},
                                           extra_body=dict(extra, repetition_penalty=1.2, min_p=0.05, min_tokens=2))
check(penalised.usage.completion_tokens == 8, "penalties and logit_bias accepted")
try:
    client.chat.completions.create(model="tiny", messages=msgs, presence_penalty=3)
    check(False, "presence_penalty=3 is a 400")
except openai.BadRequestError as e:
    check(e.body.get("param") == "presence_penalty" if isinstance(e.body, dict) else "presence_penalty" in str(e),
          "presence_penalty=3 names the param")
try:
    client.chat.completions.create(model="tiny", messages=msgs, n=17)
    check(False, "n=17 is a 400")
except openai.BadRequestError as e:
    check(e.body.get("param") == "n" if isinstance(e.body, dict) else "n" in str(e), "n=17 names the param")
try:
    openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
    check(False, "a wrong key is a 401")
except openai.AuthenticationError:
    pass

proc.send_signal(signal.SIGTERM)
code = proc.wait(timeout=30)
check(code == 0, f"exit code 0 on SIGTERM, got {code}")
print(json.dumps({"failures": failures}))
sys.exit(1 if failures else 0)
