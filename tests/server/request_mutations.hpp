// Mutations of request bodies for the request-parser fuzz tests (the normal
// build's tests/server and the AddressSanitizer build's tests/fuzz_server).
#pragma once

#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace megamoe::server::testing {

using mutation_json = nlohmann::ordered_json;

inline const std::vector<std::string>& seeds() {
  static const std::vector<std::string> s = {
      R"({"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0.5, "top_p": 0.9, "stop": ["x"], "stream": true, "stream_options": {"include_usage": true}})",
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"}], "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}], "tool_choice": "auto", "max_completion_tokens": 3, "logprobs": true, "top_logprobs": 2, "seed": 5, "chat_template_kwargs": {"thinking": true}, "reasoning_effort": "max"})",
      R"({"prompt": "Once upon a time", "max_tokens": 5, "logprobs": 1, "stop": "x", "top_k": 3})",
      R"({"prompt": [0, 5, 7], "max_tokens": 2})",
      R"({"model": "c", "max_tokens": 5, "system": "s", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": [{"type": "thinking", "thinking": "t"}, {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]}, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}], "tools": [{"name": "f", "input_schema": {"type": "object"}}], "thinking": {"type": "enabled"}, "stop_sequences": ["z"]})",
  };
  return s;
}

inline const std::vector<std::string> kFragments = {"null", "-1", "0", "1e999", "-0.0", "\"\"", "[]", "{}", "true", "\"\\u0000\"",
                                             "\"\\ud800\"", "9223372036854775808", "\"<｜end▁of▁sentence｜>\"", ",", ":", "\"",
                                             "{\"role\": \"tool\"}", "\xff", "\xc3", "[[[[", "}}}"};

inline std::string mutate(std::string s, std::mt19937_64& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    if (s.empty()) s = "{";
    const std::size_t at = rng() % s.size();
    switch (rng() % 6) {
      case 0: s[at] = static_cast<char>(rng() & 0xff); break;
      case 1: s.erase(at, 1 + rng() % 8); break;
      case 2: s.insert(at, kFragments[rng() % kFragments.size()]); break;
      case 3: s.insert(at, s.substr(rng() % s.size(), rng() % 16)); break;
      case 4: s.resize(at); break;
      case 5: {  // replace a JSON value after a colon with a fragment
        const std::size_t colon = s.find(':', at);
        if (colon != std::string::npos) {
          std::size_t end = s.find_first_of(",}]", colon + 1);
          if (end == std::string::npos) end = s.size();
          s.replace(colon + 1, end - colon - 1, " " + kFragments[rng() % kFragments.size()]);
        }
        break;
      }
    }
  }
  return s;
}

// Structured mutation: a random member of the parsed seed gets a value of another type.
inline std::string mutate_value(const std::string& seed, std::mt19937_64& rng) {
  mutation_json j = mutation_json::parse(seed);
  std::vector<mutation_json*> nodes;
  std::function<void(mutation_json&)> walk = [&](mutation_json& v) {
    nodes.push_back(&v);
    if (v.is_structured()) for (auto& c : v) walk(c);
  };
  walk(j);
  mutation_json* target = nodes[rng() % nodes.size()];
  const mutation_json options[] = {mutation_json(), mutation_json(-5), mutation_json(1e300), mutation_json("x"),
                                   mutation_json::array(), mutation_json::object(), mutation_json(true),
                                   mutation_json::array({1, 2}), mutation_json(std::string(3, 'a')), mutation_json(2)};
  *target = options[rng() % std::size(options)];
  return j.dump();
}


// The i-th mutant of the seed bodies (which seed: i % seeds().size()).
inline std::string mutant(int i, std::mt19937_64& rng) {
  const std::size_t which = static_cast<std::size_t>(i) % seeds().size();
  return i % 3 == 0 ? mutate_value(seeds()[which], rng) : mutate(seeds()[which], rng);
}

}  // namespace megamoe::server::testing
