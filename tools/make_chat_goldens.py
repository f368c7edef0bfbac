#!/usr/bin/env python3
"""Writes tests/data/text/chat_goldens.json: DeepSeek-V4 chat-encoding and
output-parsing goldens from DeepSeek's official `encoding_dsv4.py` (published
with the model in the Hugging Face repo deepseek-ai/DeepSeek-V4-Flash, folder
encoding/; not part of this project: pass the path of a local copy), plus the
token ids of every prompt from the Hugging Face `tokenizers` library.

  .venv-fixtures/bin/python tools/make_chat_goldens.py /path/to/encoding_dsv4.py \
      "$(bash scripts/fetch_tokenizer.sh)" tests/data/text/chat_goldens.json
"""
import copy
import importlib.util
import json
import sys

from tokenizers import Tokenizer

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. 北京"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "top_k": {"type": "integer", "default": 5},
        "filters": {"type": "object"}}, "required": ["query"]}}}


def call(id_, name, args):
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


SYS = {"role": "system", "content": "You are a helpful assistant."}
SYS_TOOLS = {"role": "system", "content": "You are a helpful assistant with tools.", "tools": [WEATHER_TOOL, SEARCH_TOOL]}

TOOL_TURNS = [
    {"role": "user", "content": "What's the weather in Beijing and Paris?"},
    {"role": "assistant", "content": "", "reasoning_content": "I should call the weather tool twice.",
     "tool_calls": [call("call_1", "get_weather", '{"city": "Beijing", "unit": "celsius"}'),
                    call("call_2", "get_weather", '{"city": "Paris"}')]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21, "sky": "clear"}'},
    {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 15, "sky": "rain"}'},
]

CONVERSATIONS = [
    ("single_user", [{"role": "user", "content": "Hello!"}]),
    ("system_user", [SYS, {"role": "user", "content": "What is 2+2?"}]),
    ("multi_turn", [SYS, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Tell me a joke."}]),
    ("multi_turn_reasoning", [SYS, {"role": "user", "content": "Is 17 prime?"},
                              {"role": "assistant", "content": "Yes, 17 is prime.", "reasoning_content": "17 has no divisors but 1 and 17."},
                              {"role": "user", "content": "And 21?"}]),
    ("assistant_final", [SYS, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."}]),
    ("assistant_prefill_wo_eos", [{"role": "user", "content": "Write a haiku."},
                                  {"role": "assistant", "content": "Autumn moonlight—", "wo_eos": True}]),
    ("system_only", [SYS]),
    ("trailing_system", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}, {"role": "system", "content": "Be brief."}]),
    ("empty_system", [{"role": "system", "content": ""}, {"role": "user", "content": "x"}]),
    ("consecutive_users", [{"role": "user", "content": "First part."}, {"role": "user", "content": "Second part."}]),
    ("tools_in_system", [SYS_TOOLS, {"role": "user", "content": "Weather in Tokyo?"}]),
    ("tool_calls_and_results", [SYS_TOOLS] + TOOL_TURNS),
    ("tool_results_then_answer", [SYS_TOOLS] + TOOL_TURNS + [
        {"role": "assistant", "content": "Beijing: 21°C and clear. Paris: 15°C with rain.", "reasoning_content": "Summarize."},
        {"role": "user", "content": "Thanks! Which is warmer?"}]),
    ("tool_results_out_of_order", [SYS_TOOLS, TOOL_TURNS[0], TOOL_TURNS[1], TOOL_TURNS[3], TOOL_TURNS[2]]),
    ("tool_result_and_user_text", [SYS_TOOLS] + TOOL_TURNS + [{"role": "user", "content": "Also, convert to Fahrenheit."}]),
    ("tool_call_nonstring_args", [SYS_TOOLS, {"role": "user", "content": "Search cats"},
        {"role": "assistant", "content": "Let me search.", "tool_calls": [call("c1", "search",
            '{"query": "cats \\"cute\\"", "top_k": 3, "filters": {"lang": "en", "safe": true, "score": 0.5}, "tags": ["a", null]}')]},
        {"role": "tool", "tool_call_id": "c1", "content": "[1] Cats are great."}]),
    ("tool_call_bad_json_args", [SYS_TOOLS, {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "search", "not json {")]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]),
    ("tool_content_blocks", [SYS_TOOLS, {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [call("c1", "search", '{"query": "x"}')]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "part one"}, {"type": "image_url", "image_url": {"url": "u"}}, {"type": "text", "text": "part two"}]}]),
    ("developer_role", [SYS, {"role": "developer", "content": "Answer in French."}, {"role": "user", "content": "Hello"}]),
    ("developer_with_tools", [{"role": "developer", "content": "Use tools when needed.", "tools": [WEATHER_TOOL]}]),
    ("response_format", [{"role": "system", "content": "Extract data.", "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}}}},
                         {"role": "user", "content": "John is 30."}]),
    ("unicode_content", [{"role": "system", "content": "你是一个有用的助手。"}, {"role": "user", "content": "用中文解释量子计算 🧠 — «ok»\n\tdone"}]),
    ("special_text_in_user", [{"role": "user", "content": "What does <think> mean? And <｜User｜>?"}]),
    ("latest_reminder", [SYS, {"role": "user", "content": "Plan my day."}, {"role": "latest_reminder", "content": "Today is Monday."}]),
    ("task_title", [{"role": "user", "content": "Summarize: cats and dogs living together", "task": "title"}]),
    ("task_action", [{"role": "user", "content": "book a flight", "task": "action"}]),
    ("long_history", [SYS] + sum([[{"role": "user", "content": f"Question {i}?"},
                                   {"role": "assistant", "content": f"Answer {i}.", "reasoning_content": f"Think {i}."}] for i in range(4)], [])
                     + [{"role": "user", "content": "Final question?"}]),
    ("json_escapes_in_tool_schema", [{"role": "system", "content": "", "tools": [{"type": "function", "function": {
        "name": "echo", "description": "Quote \" backslash \\ newline \n tab \t ctrl \u0001 unicode é 中", "parameters": {
            "type": "object", "properties": {"x": {"type": "number", "minimum": -1.5, "maximum": 1e20, "multipleOf": 0.001}}}}}]},
        {"role": "user", "content": "hi"}]),
    ("empty_assistant", [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "b"}]),
]

OPTION_SETS = [
    ("chat", {"thinking_mode": "chat"}),
    ("thinking", {"thinking_mode": "thinking"}),
]
EXTRA_OPTION_CASES = [
    ("multi_turn_reasoning", "thinking_keep", {"thinking_mode": "thinking", "drop_thinking": False}),
    ("long_history", "thinking_keep", {"thinking_mode": "thinking", "drop_thinking": False}),
    ("system_user", "thinking_max", {"thinking_mode": "thinking", "reasoning_effort": "max"}),
    ("system_user", "thinking_high", {"thinking_mode": "thinking", "reasoning_effort": "high"}),
    ("system_user", "chat_max", {"thinking_mode": "chat", "reasoning_effort": "max"}),
    ("single_user", "no_bos", {"thinking_mode": "chat", "add_default_bos_token": False}),
    ("tool_calls_and_results", "thinking_max", {"thinking_mode": "thinking", "reasoning_effort": "max"}),
]

COMPLETIONS = [
    ("chat", "Hello there!<｜end▁of▁sentence｜>"),
    ("chat", "Multi\nline\n\nanswer with 中文 and emoji 😀<｜end▁of▁sentence｜>"),
    ("thinking", "Let me think about this.\nStep 1...</think>The answer is 42.<｜end▁of▁sentence｜>"),
    ("thinking", "</think>No reasoning.<｜end▁of▁sentence｜>"),
    ("chat", "Text without EOS"),
]


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    encoding_path, tokenizer_path, out_path = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("encoding_dsv4", encoding_path)
    enc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(enc)
    tok = Tokenizer.from_file(tokenizer_path)

    def case(name, messages, options):
        kwargs = dict(options)
        prompt = enc.encode_messages(copy.deepcopy(messages), **kwargs)
        return {"name": name, "messages": messages, "options": {
            "thinking": kwargs.get("thinking_mode") == "thinking",
            "drop_thinking": kwargs.get("drop_thinking", True),
            "add_bos": kwargs.get("add_default_bos_token", True),
            "reasoning_effort": kwargs.get("reasoning_effort") or ""},
            "prompt": prompt, "ids": tok.encode(prompt, add_special_tokens=False).ids}

    by_name = dict(CONVERSATIONS)
    cases = []
    for name, messages in CONVERSATIONS:
        for opt_name, options in OPTION_SETS:
            cases.append(case(f"{name}/{opt_name}", messages, options))
    for name, opt_name, options in EXTRA_OPTION_CASES:
        cases.append(case(f"{name}/{opt_name}", by_name[name], options))

    # Output-side goldens: model completions (assistant turns rendered by the
    # official encoder, plus hand-written ones) parsed by the official parser.
    completions = list(COMPLETIONS)
    for name, messages in CONVERSATIONS:
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or m.get("wo_eos"):
                continue
            for mode in ("chat", "thinking"):
                text = enc.render_message(i, enc.merge_tool_messages(messages), thinking_mode=mode, drop_thinking=False)
                if mode == "chat" and text.startswith("</think>"):
                    continue
                completions.append((mode, text))
    parses = []
    for mode, text in completions:
        try:
            parsed = enc.parse_message_from_completion_text(text, mode)
            parses.append({"thinking": mode == "thinking", "text": text, "ok": True, "content": parsed["content"],
                           "reasoning_content": parsed["reasoning_content"],
                           "tool_calls": [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                                          for c in parsed["tool_calls"]]})
        except (AssertionError, ValueError) as e:
            parses.append({"thinking": mode == "thinking", "text": text, "ok": False, "error": str(e)})

    doc = {"generator": "tools/make_chat_goldens.py", "encoder": "official encoding_dsv4.py (DeepSeek-V4)",
           "cases": cases, "parses": parses}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    print(f"wrote {len(cases)} chat encoding and {len(parses)} parse goldens to {out_path}")


if __name__ == "__main__":
    main()
