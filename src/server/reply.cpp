#include "server/reply.hpp"

#include <algorithm>
#include <random>

namespace megamoe::server {
namespace {

using json = nlohmann::ordered_json;

std::string random_hex(std::size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += digits[rng() & 15];
  return s;
}

std::string sse_data(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }
std::string sse_event(const std::string& name, const json& j) {
  return "event: " + name + "\n" + sse_data(j);
}

json bytes_array(const std::string& s) {
  json a = json::array();
  for (const unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

// OpenAI chat logprobs: {"content": [{token, logprob, bytes, top_logprobs}]}.
json chat_logprobs(const std::vector<TokenLogprob>& list) {
  json content = json::array();
  for (const TokenLogprob& t : list) {
    json top = json::array();
    for (const TokenLogprob& o : t.top) {
      top.push_back(json{{"token", o.token}, {"logprob", o.logprob}, {"bytes", bytes_array(o.bytes)}});
    }
    content.push_back(json{{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_array(t.bytes)}, {"top_logprobs", top}});
  }
  return json{{"content", content}};
}

// Legacy completions logprobs: tokens, token_logprobs, top_logprobs, text_offset.
json completion_logprobs(const std::vector<TokenLogprob>& list, int64_t& offset) {
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  for (const TokenLogprob& t : list) {
    tokens.push_back(t.token);
    lps.push_back(t.logprob);
    json top = json::object();
    for (const TokenLogprob& o : t.top) top[o.token] = o.logprob;
    tops.push_back(top);
    offsets.push_back(offset);
    offset += static_cast<int64_t>(t.token.size());
  }
  return json{{"tokens", tokens}, {"token_logprobs", lps}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

// The prompt counts once, the completion tokens of every choice add up.
json usage_json(const Choices& choices) {
  const int64_t prompt = choices.front()->prompt_tokens();
  int64_t completion = 0;
  for (const auto& g : choices) completion += g->completion_tokens();
  return json{{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

class OpenAiFormat : public ReplyFormat {
 public:
  explicit OpenAiFormat(const ReplyInfo& info)
      : info_(info), text_offsets_(static_cast<std::size_t>(std::max<int64_t>(info.n, 1)), 0) {}

  std::string stream_start() override {
    if (info_.api == Api::kCompletion) return {};
    std::string out;
    for (int64_t i = 0; i < info_.n; ++i) {
      out += sse_data(chunk(i, json{{"role", "assistant"}, {"content", ""}}, json(), json()));
    }
    return out;
  }

  std::string stream_batch(const Batch& batch, int64_t choice) override {
    std::string out;
    json logprobs = batch.logprobs.empty() ? json() : logprobs_json(batch.logprobs, choice);
    for (const Delta& d : batch.deltas) {
      const json delta = delta_json(d);
      if (delta.is_null()) continue;  // a call's end: its deltas said it all
      out += sse_data(chunk(choice, delta, logprobs, json()));
      logprobs = json();  // attached to the first chunk of the batch
    }
    if (!logprobs.is_null()) {
      out += sse_data(chunk(choice, delta_json(Delta{Delta::Kind::kContent, "", {}, 0}), logprobs, json()));
    }
    return out;
  }

  std::string stream_choice_end(const Generation& g, int64_t choice) override {
    json last = info_.api == Api::kCompletion ? json() : json::object();
    return sse_data(chunk(choice, last, json(), g.finish_reason()));
  }

  std::string stream_end(const Choices& choices) override {
    std::string out;
    if (info_.include_usage) {
      json u = base(info_.api == Api::kChat ? "chat.completion.chunk" : "text_completion");
      u["choices"] = json::array();
      u["usage"] = usage_json(choices);
      out += sse_data(u);
    }
    return out + "data: [DONE]\n\n";
  }

  std::string stream_error(const std::string& message) override {
    return sse_data(error_body(info_.api, 500, "server_error", message, "", "")) + "data: [DONE]\n\n";
  }

  json whole(const Choices& choices) override {
    json reply = base(info_.api == Api::kChat ? "chat.completion" : "text_completion");
    json list = json::array();
    for (std::size_t i = 0; i < choices.size(); ++i) list.push_back(whole_choice(*choices[i], static_cast<int64_t>(i)));
    reply["choices"] = list;
    reply["usage"] = usage_json(choices);
    return reply;
  }

 private:
  json whole_choice(const Generation& g, int64_t index) {
    json choice = {{"index", index}};
    if (info_.api == Api::kChat) {
      std::string content, reasoning;
      json calls = json::array();
      for (const Delta& d : g.all_deltas()) {
        if (d.kind == Delta::Kind::kContent) content += d.text;
        if (d.kind == Delta::Kind::kReasoning) reasoning += d.text;
        if (d.kind == Delta::Kind::kToolCallEnd) {
          calls.push_back(json{{"id", tool_call_id()},
                               {"type", "function"},
                               {"function", {{"name", d.call.name}, {"arguments", d.call.arguments}}}});
        }
      }
      json message = {{"role", "assistant"}, {"content", calls.empty() || !content.empty() ? json(content) : json()}};
      if (!reasoning.empty()) message["reasoning_content"] = reasoning;
      if (!calls.empty()) message["tool_calls"] = calls;
      choice["message"] = message;
    } else {
      std::string text;
      for (const Delta& d : g.all_deltas()) {
        if (d.kind == Delta::Kind::kContent || d.kind == Delta::Kind::kReasoning) text += d.text;
      }
      choice["text"] = text;
    }
    choice["logprobs"] = info_.logprobs ? logprobs_json(g.all_logprobs(), index) : json();
    choice["finish_reason"] = g.finish_reason();
    return choice;
  }

  json base(const char* object) const {
    return json{{"id", info_.id}, {"object", object}, {"created", info_.created}, {"model", info_.model},
                {"system_fingerprint", "megamoe"}};
  }

  json logprobs_json(const std::vector<TokenLogprob>& list, int64_t choice) {
    return info_.api == Api::kChat ? chat_logprobs(list)
                                   : completion_logprobs(list, text_offsets_.at(static_cast<std::size_t>(choice)));
  }

  static std::string tool_call_id() { return "call_" + random_hex(24); }

  // A call's first delta names it (arguments ""), the next ones carry only
  // argument fragments; null for the kinds that send nothing.
  json delta_json(const Delta& d) {
    switch (d.kind) {
      case Delta::Kind::kReasoning:
        return json{{"reasoning_content", d.text}};
      case Delta::Kind::kContent:
        return json{{"content", d.text}};
      case Delta::Kind::kToolCallBegin:
        return json{{"tool_calls", json::array({json{{"index", d.tool_index},
                                                     {"id", tool_call_id()},
                                                     {"type", "function"},
                                                     {"function", {{"name", d.call.name}, {"arguments", ""}}}}})}};
      case Delta::Kind::kToolCallArguments:
        return json{{"tool_calls",
                     json::array({json{{"index", d.tool_index}, {"function", {{"arguments", d.text}}}}})}};
      case Delta::Kind::kToolCallEnd:
      case Delta::Kind::kToolCallAbort:
        break;
    }
    return json();
  }

  // One chunk: a chat delta (object) or completion text (the delta's content).
  json chunk(int64_t index, const json& delta, const json& logprobs, const json& finish_reason) {
    json c = base(info_.api == Api::kChat ? "chat.completion.chunk" : "text_completion");
    json choice = {{"index", index}};
    if (info_.api == Api::kChat) {
      choice["delta"] = delta;
    } else {
      choice["text"] = delta.is_object() && delta.contains("content") ? delta["content"] : json("");
    }
    choice["logprobs"] = logprobs;
    choice["finish_reason"] = finish_reason;
    c["choices"] = json::array({choice});
    if (info_.include_usage) c["usage"] = json();
    return c;
  }

  ReplyInfo info_;
  std::vector<int64_t> text_offsets_;  // per choice: where its next completion token starts
};

// Anthropic's stop_reason.
std::string stop_reason(const Generation& g) {
  if (g.reason() == EndReason::kLength) return "max_tokens";
  if (g.tool_calls() > 0) return "tool_use";
  if (!g.matched_stop().empty()) return "stop_sequence";
  return "end_turn";
}

json tool_input(const std::string& arguments) {
  try {
    json j = json::parse(arguments);
    if (j.is_object()) return j;
  } catch (const json::exception&) {
  }
  return json{{"arguments", arguments}};
}

class AnthropicFormat : public ReplyFormat {
 public:
  explicit AnthropicFormat(const ReplyInfo& info) : info_(info) {}

  std::string stream_start() override {
    json message = {{"id", info_.id},      {"type", "message"},       {"role", "assistant"},
                    {"model", info_.model}, {"content", json::array()}, {"stop_reason", json()},
                    {"stop_sequence", json()},
                    {"usage", {{"input_tokens", info_.prompt_tokens}, {"output_tokens", 0}}}};
    return sse_event("message_start", json{{"type", "message_start"}, {"message", message}});
  }

  std::string stream_batch(const Batch& batch, int64_t) override {
    std::string out;
    for (const Delta& d : batch.deltas) {
      // A tool_use block: started empty, its input as input_json_delta fragments.
      if (d.kind == Delta::Kind::kToolCallBegin) {
        out += close_block();
        json block = {{"type", "tool_use"}, {"id", "toolu_" + random_hex(24)}, {"name", d.call.name}, {"input", json::object()}};
        out += sse_event("content_block_start", json{{"type", "content_block_start"}, {"index", index_}, {"content_block", block}});
        open_ = "tool_use";
        continue;
      }
      if (d.kind == Delta::Kind::kToolCallArguments) {
        out += sse_event("content_block_delta",
                         json{{"type", "content_block_delta"},
                              {"index", index_},
                              {"delta", {{"type", "input_json_delta"}, {"partial_json", d.text}}}});
        continue;
      }
      if (d.kind == Delta::Kind::kToolCallEnd || d.kind == Delta::Kind::kToolCallAbort) {
        out += close_block();
        continue;
      }
      const bool thinking = d.kind == Delta::Kind::kReasoning;
      const std::string type = thinking ? "thinking" : "text";
      if (open_ != type) {
        out += close_block();
        json block = thinking ? json{{"type", "thinking"}, {"thinking", ""}} : json{{"type", "text"}, {"text", ""}};
        out += sse_event("content_block_start", json{{"type", "content_block_start"}, {"index", index_}, {"content_block", block}});
        open_ = type;
      }
      json delta = thinking ? json{{"type", "thinking_delta"}, {"thinking", d.text}} : json{{"type", "text_delta"}, {"text", d.text}};
      out += sse_event("content_block_delta", json{{"type", "content_block_delta"}, {"index", index_}, {"delta", delta}});
    }
    return out;
  }

  std::string stream_choice_end(const Generation&, int64_t) override { return {}; }

  // Anthropic has one choice.
  std::string stream_end(const Choices& choices) override {
    const Generation& g = *choices.front();
    std::string out = close_block();
    const std::string stop = g.matched_stop();
    out += sse_event("message_delta",
                     json{{"type", "message_delta"},
                          {"delta", {{"stop_reason", stop_reason(g)}, {"stop_sequence", stop.empty() ? json() : json(stop)}}},
                          {"usage", {{"output_tokens", g.completion_tokens()}}}});
    return out + sse_event("message_stop", json{{"type", "message_stop"}});
  }

  std::string stream_error(const std::string& message) override {
    return sse_event("error", error_body(Api::kMessages, 500, "api_error", message, "", ""));
  }

  json whole(const Choices& choices) override {
    const Generation& g = *choices.front();
    json content = json::array();
    for (const Delta& d : g.all_deltas()) {
      if (d.kind == Delta::Kind::kReasoning) content.push_back(json{{"type", "thinking"}, {"thinking", d.text}, {"signature", ""}});
      if (d.kind == Delta::Kind::kContent) content.push_back(json{{"type", "text"}, {"text", d.text}});
      if (d.kind == Delta::Kind::kToolCallEnd) {
        content.push_back(json{{"type", "tool_use"}, {"id", "toolu_" + random_hex(24)}, {"name", d.call.name},
                               {"input", tool_input(d.call.arguments)}});
      }
    }
    const std::string stop = g.matched_stop();
    return json{{"id", info_.id},
                {"type", "message"},
                {"role", "assistant"},
                {"model", info_.model},
                {"content", content},
                {"stop_reason", stop_reason(g)},
                {"stop_sequence", stop.empty() ? json() : json(stop)},
                {"usage", {{"input_tokens", g.prompt_tokens()}, {"output_tokens", g.completion_tokens()}}}};
  }

 private:
  std::string close_block() {
    if (open_.empty()) return {};
    std::string out = sse_event("content_block_stop", json{{"type", "content_block_stop"}, {"index", index_}});
    open_.clear();
    ++index_;
    return out;
  }

  ReplyInfo info_;
  std::string open_;  // type of the open content block ("" = none)
  int64_t index_ = 0;
};

}  // namespace

std::unique_ptr<ReplyFormat> make_reply_format(const ReplyInfo& info) {
  if (info.api == Api::kMessages) return std::make_unique<AnthropicFormat>(info);
  return std::make_unique<OpenAiFormat>(info);
}

json error_body(Api api, int status, const std::string& type, const std::string& message, const std::string& param,
                const std::string& code) {
  if (api == Api::kMessages) {
    std::string t = type;
    if (status == 401) t = "authentication_error";
    else if (status == 404) t = "not_found_error";
    else if (status == 413) t = "request_too_large";
    else if (status == 503 || status == 429) t = "overloaded_error";
    else if (status >= 500) t = "api_error";
    else t = "invalid_request_error";
    return json{{"type", "error"}, {"error", {{"type", t}, {"message", message}}}};
  }
  return json{{"error",
               {{"message", message},
                {"type", type},
                {"param", param.empty() ? json() : json(param)},
                {"code", code.empty() ? json() : json(code)}}}};
}

}  // namespace megamoe::server
