#include "server/request.hpp"

#include <cmath>
#include <random>
#include <unordered_set>

#include "server/api_error.hpp"
#include "text/chat_encoding.hpp"

namespace megamoe::server {
namespace {

using json = nlohmann::ordered_json;

// A present, non-null member (null counts as absent, as OpenAI's API treats it).
const json* member(const json& obj, const std::string& key) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void wrong_type(const std::string& path, const char* want, const json& got) {
  MEGAMOE_BAD_REQUEST(path, path, " must be ", want, ", got ", got.type_name());
}

double number(const json& obj, const std::string& key, double def, double lo, double hi, const std::string& path) {
  const json* v = member(obj, key);
  if (!v) return def;
  if (!v->is_number()) wrong_type(path, "a number", *v);
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) MEGAMOE_BAD_REQUEST(path, path, " must be in [", lo, ", ", hi, "], got ", x);
  return x;
}

int64_t integer(const json& obj, const std::string& key, int64_t def, int64_t lo, int64_t hi, const std::string& path) {
  const json* v = member(obj, key);
  if (!v) return def;
  if (v->is_number_float()) {
    // 16.0 is accepted as 16 (some clients serialise every number as a float).
    const double d = v->get<double>();
    if (!(d >= -9.2e18 && d <= 9.2e18) || d != std::floor(d)) wrong_type(path, "an integer", *v);
  } else if (!v->is_number_integer()) {
    wrong_type(path, "an integer", *v);
  }
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
    MEGAMOE_BAD_REQUEST(path, path, " must be at most ", hi, ", got ", v->get<uint64_t>());
  }
  const int64_t x = v->is_number_float() ? static_cast<int64_t>(v->get<double>()) : v->get<int64_t>();
  if (x < lo || x > hi) MEGAMOE_BAD_REQUEST(path, path, " must be in [", lo, ", ", hi, "], got ", x);
  return x;
}

bool boolean(const json& obj, const std::string& key, bool def, const std::string& path) {
  const json* v = member(obj, key);
  if (!v) return def;
  if (!v->is_boolean()) wrong_type(path, "a boolean", *v);
  return v->get<bool>();
}

std::string string_field(const json& obj, const std::string& key, const std::string& def, const std::string& path) {
  const json* v = member(obj, key);
  if (!v) return def;
  if (!v->is_string()) wrong_type(path, "a string", *v);
  return v->get<std::string>();
}

// Rejects a parameter that would change the output unless it has its neutral value.
void unsupported_unless(const json& body, const std::string& key, const std::function<bool(const json&)>& neutral,
                        const std::string& why) {
  const json* v = member(body, key);
  if (v && !neutral(*v)) {
    MEGAMOE_BAD_REQUEST(key, key, " is not supported", why.empty() ? "" : ": ", why);
  }
}

bool is_number_equal(const json& v, double x) { return v.is_number() && v.get<double>() == x; }

void reject_unsupported_common(const json& body) {
  unsupported_unless(body, "best_of", [](const json& v) { return is_number_equal(v, 1); }, "only best_of = 1");
  unsupported_unless(body, "response_format",
                     [](const json& v) { return v.is_object() && v.value("type", "") == "text"; },
                     "no constrained output (json_object / json_schema); only {\"type\": \"text\"}");
  for (const char* key : {"guided_json", "guided_regex", "guided_choice", "guided_grammar", "grammar", "json_schema",
                          "prediction", "audio", "functions", "function_call", "web_search_options"}) {
    unsupported_unless(body, key, [](const json&) { return false; }, "");
  }
  unsupported_unless(body, "modalities",
                     [](const json& v) { return v.is_array() && v.size() == 1 && v[0] == "text"; }, "text only");
}

uint64_t fresh_seed() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return rng();
}

// temperature, top_p, top_k, seed.
SamplingParams sampling(const json& body, double default_temperature) {
  SamplingParams s;
  s.temperature = number(body, "temperature", default_temperature, 0.0, 2.0, "temperature");
  s.top_p = number(body, "top_p", 1.0, 0.0, 1.0, "top_p");
  if (s.top_p <= 0.0) MEGAMOE_BAD_REQUEST("top_p", "top_p must be in (0, 1], got ", s.top_p);
  const int64_t top_k = integer(body, "top_k", 0, -1, INT32_MAX, "top_k");
  s.top_k = top_k < 0 ? 0 : top_k;
  const json* seed = member(body, "seed");
  if (!seed) {
    s.seed = fresh_seed();
  } else if (seed->is_number_unsigned()) {
    s.seed = seed->get<uint64_t>();
  } else if (seed->is_number_integer()) {
    s.seed = static_cast<uint64_t>(seed->get<int64_t>());
  } else {
    wrong_type("seed", "an integer", *seed);
  }
  return s;
}

// presence_penalty, frequency_penalty, repetition_penalty, logit_bias ({"id": bias}, ids as decimal strings),
// min_p, and min_tokens (which holds the request's end ids back).
LogitAdjustParams logit_adjustments(const json& body, const ApiContext& ctx, const std::vector<int32_t>& eos_ids) {
  LogitAdjustParams a;
  a.min_p = number(body, "min_p", 0.0, 0.0, 1.0, "min_p");
  a.min_tokens = integer(body, "min_tokens", 0, 0, INT32_MAX, "min_tokens");
  a.min_tokens_ids = eos_ids;
  a.presence_penalty = number(body, "presence_penalty", 0.0, -2.0, 2.0, "presence_penalty");
  a.frequency_penalty = number(body, "frequency_penalty", 0.0, -2.0, 2.0, "frequency_penalty");
  a.repetition_penalty = number(body, "repetition_penalty", 1.0, 0.0, 10.0, "repetition_penalty");
  if (a.repetition_penalty <= 0.0) {
    MEGAMOE_BAD_REQUEST("repetition_penalty", "repetition_penalty must be in (0, 10], got ", a.repetition_penalty);
  }
  const json* bias = member(body, "logit_bias");
  if (!bias) return a;
  if (!bias->is_object()) wrong_type("logit_bias", "an object of token id -> bias", *bias);
  constexpr std::size_t kMaxBiases = 1024;
  if (bias->size() > kMaxBiases) {
    MEGAMOE_BAD_REQUEST("logit_bias", "logit_bias has ", bias->size(), " entries; at most ", kMaxBiases,
                        " are allowed");
  }
  std::unordered_set<long long> ids;
  for (const auto& [key, value] : bias->items()) {
    const std::string path = "logit_bias." + key;
    const bool digits = !key.empty() && key.size() <= 10 &&
                        key.find_first_not_of("0123456789") == std::string::npos;
    const long long id = digits ? std::stoll(key) : -1;
    if (id < 0 || id >= ctx.model_vocab) {
      MEGAMOE_BAD_REQUEST("logit_bias", "logit_bias key '", key, "' is not a token id in [0, ", ctx.model_vocab, ")");
    }
    if (!value.is_number()) wrong_type(path, "a number", value);
    const double b = value.get<double>();
    if (!(b >= -100.0 && b <= 100.0)) MEGAMOE_BAD_REQUEST("logit_bias", path, " must be in [-100, 100], got ", b);
    // Keys are distinct strings, but "7" and "007" name one id.
    if (!ids.insert(id).second) MEGAMOE_BAD_REQUEST("logit_bias", "logit_bias names token id ", id, " twice");
    a.logit_bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(b));
  }
  return a;
}

std::vector<std::string> stop_strings(const json& body, const std::string& key) {
  std::vector<std::string> out;
  const json* v = member(body, key);
  if (!v) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array()) {
    if (v->size() > 16) MEGAMOE_BAD_REQUEST(key, key, " has ", v->size(), " entries; at most 16 are allowed");
    for (std::size_t i = 0; i < v->size(); ++i) {
      if (!(*v)[i].is_string()) wrong_type(key + "[" + std::to_string(i) + "]", "a string", (*v)[i]);
      out.push_back((*v)[i].get<std::string>());
    }
  } else {
    wrong_type(key, "a string or an array of strings", *v);
  }
  for (const std::string& s : out) {
    if (s.empty()) MEGAMOE_BAD_REQUEST(key, key, ": a stop string must not be empty");
  }
  return out;
}

// n, stream, stream_options.include_usage, ignore_eos, model, eos ids (EOS unless ignore_eos, then stop_token_ids).
void common_fields(const json& body, const ApiContext& ctx, ParsedRequest& r) {
  r.model = string_field(body, "model", "", "model");
  r.n = integer(body, "n", 1, 1, kMaxChoices, "n");
  r.stream = boolean(body, "stream", false, "stream");
  if (const json* so = member(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    r.include_usage = boolean(*so, "include_usage", false, "stream_options.include_usage");
  }
  const bool ignore_eos = boolean(body, "ignore_eos", false, "ignore_eos");
  if (!ignore_eos && ctx.eos_id >= 0) r.text.eos_ids = {static_cast<int32_t>(ctx.eos_id)};
  if (const json* ids = member(body, "stop_token_ids")) {  // vLLM's: they end the output like EOS
    if (!ids->is_array()) wrong_type("stop_token_ids", "an array of token ids", *ids);
    constexpr std::size_t kMaxStopIds = 64;
    if (ids->size() > kMaxStopIds) {
      MEGAMOE_BAD_REQUEST("stop_token_ids", "stop_token_ids has ", ids->size(), " entries; at most ", kMaxStopIds,
                          " are allowed");
    }
    for (std::size_t i = 0; i < ids->size(); ++i) {
      const json& v = (*ids)[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= ctx.model_vocab) {
        MEGAMOE_BAD_REQUEST("stop_token_ids", "stop_token_ids[", i, "] is not a token id in [0, ", ctx.model_vocab,
                            ")");
      }
      r.text.eos_ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
  }
}

// Maximum new tokens: `keys` in order (first present wins), else `def`
// (<= 0: whatever context is left after the prompt).
void max_tokens(const json& body, std::initializer_list<const char*> keys, int64_t def, const ApiContext& ctx,
                ParsedRequest& r) {
  int64_t n = def;
  for (const char* key : keys) {
    if (member(body, key)) {
      n = integer(body, key, def, 1, INT64_MAX / 4, key);
      break;
    }
  }
  if (n <= 0) n = std::max<int64_t>(1, ctx.max_context - static_cast<int64_t>(r.gen.prompt.size()));
  r.gen.max_tokens = n;
}

std::vector<int32_t> encode_prompt_text(const ApiContext& ctx, const std::string& text, const std::string& param) {
  try {
    return encode_text_prompt(ctx.tokenizer, text, ctx.bos_id, param);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    MEGAMOE_BAD_REQUEST(param, e.what());
  }
}

// ---- chat messages ----

// A message's content as one string: a string, or a list of text parts.
std::string content_text(const json& content, const std::string& path) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) wrong_type(path, "a string or an array of content parts", content);
  std::string out;
  for (std::size_t j = 0; j < content.size(); ++j) {
    const json& part = content[j];
    const std::string p = path + "[" + std::to_string(j) + "]";
    if (!part.is_object()) wrong_type(p, "an object", part);
    const std::string type = string_field(part, "type", "", p + ".type");
    if (type != "text") {
      MEGAMOE_BAD_REQUEST(p + ".type", p, ".type '", type, "' is not supported (text only)");
    }
    const json* t = member(part, "text");
    if (!t || !t->is_string()) MEGAMOE_BAD_REQUEST(p + ".text", p, ".text must be a string");
    if (!out.empty()) out += "\n";
    out += t->get<std::string>();
  }
  return out;
}

json normalize_tool_calls(const json& calls, const std::string& path) {
  if (!calls.is_array()) wrong_type(path, "an array", calls);
  json out = json::array();
  for (std::size_t k = 0; k < calls.size(); ++k) {
    const json& c = calls[k];
    const std::string p = path + "[" + std::to_string(k) + "]";
    if (!c.is_object()) wrong_type(p, "an object", c);
    const json* f = member(c, "function");
    if (!f || !f->is_object()) MEGAMOE_BAD_REQUEST(p + ".function", p, ".function must be an object");
    const json* name = member(*f, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty()) {
      MEGAMOE_BAD_REQUEST(p + ".function.name", p, ".function.name must be a non-empty string");
    }
    json args = json("{}");
    if (const json* a = member(*f, "arguments")) {
      if (a->is_string()) {
        args = *a;
      } else if (a->is_object()) {
        args = a->dump();
      } else {
        wrong_type(p + ".function.arguments", "a JSON string", *a);
      }
    }
    json call = {{"type", "function"}, {"function", {{"name", *name}, {"arguments", args}}}};
    if (const json* id = member(c, "id")) {
      if (!id->is_string()) wrong_type(p + ".id", "a string", *id);
      call["id"] = *id;
    }
    out.push_back(std::move(call));
  }
  return out;
}

json normalize_messages(const json& body) {
  const json* messages = member(body, "messages");
  if (!messages) MEGAMOE_BAD_REQUEST("messages", "messages is missing");
  if (!messages->is_array()) wrong_type("messages", "an array", *messages);
  if (messages->empty()) MEGAMOE_BAD_REQUEST("messages", "messages must not be empty");
  json out = json::array();
  for (std::size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) wrong_type(p, "an object", m);
    const json* role_v = member(m, "role");
    if (!role_v) MEGAMOE_BAD_REQUEST(p + ".role", p, ".role is missing");
    if (!role_v->is_string()) wrong_type(p + ".role", "a string", *role_v);
    const std::string role = role_v->get<std::string>();
    json n = {{"role", role}};
    const json* content = member(m, "content");
    if (role == "system" || role == "developer" || role == "user" || role == "tool") {
      if (!content) MEGAMOE_BAD_REQUEST(p + ".content", p, ".content is missing");
      n["content"] = content_text(*content, p + ".content");
      if (role == "tool") {
        if (const json* id = member(m, "tool_call_id")) {
          if (!id->is_string()) wrong_type(p + ".tool_call_id", "a string", *id);
          n["tool_call_id"] = *id;
        }
      }
    } else if (role == "assistant") {
      n["content"] = content ? content_text(*content, p + ".content") : std::string();
      if (const json* r = member(m, "reasoning_content")) {
        if (!r->is_string()) wrong_type(p + ".reasoning_content", "a string", *r);
        n["reasoning_content"] = *r;
      }
      if (const json* calls = member(m, "tool_calls")) {
        json normalized = normalize_tool_calls(*calls, p + ".tool_calls");
        if (!normalized.empty()) n["tool_calls"] = std::move(normalized);
      }
    } else {
      MEGAMOE_BAD_REQUEST(p + ".role", p, ".role '", role,
                          "' is not one of system, developer, user, assistant, tool");
    }
    out.push_back(std::move(n));
  }
  return out;
}

json check_tools(const json& tools) {
  if (!tools.is_array()) wrong_type("tools", "an array", tools);
  for (std::size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    const std::string p = "tools[" + std::to_string(i) + "]";
    if (!t.is_object()) wrong_type(p, "an object", t);
    const std::string type = string_field(t, "type", "function", p + ".type");
    if (type != "function") MEGAMOE_BAD_REQUEST(p + ".type", p, ".type '", type, "' is not supported (function only)");
    const json* f = member(t, "function");
    if (!f || !f->is_object()) MEGAMOE_BAD_REQUEST(p + ".function", p, ".function must be an object");
    const json* name = member(*f, "name");
    if (!name || !name->is_string() || name->get<std::string>().empty()) {
      MEGAMOE_BAD_REQUEST(p + ".function.name", p, ".function.name must be a non-empty string");
    }
    string_field(*f, "description", "", p + ".function.description");
    if (const json* params = member(*f, "parameters"); params && !params->is_object()) {
      wrong_type(p + ".function.parameters", "an object", *params);
    }
  }
  return tools;
}

// The prompt of (already normalized) messages with tools and thinking options.
std::vector<int32_t> encode_chat_messages(const ApiContext& ctx, json messages, const json& tools, bool thinking,
                                          const std::string& effort) {
  if (!tools.empty()) messages = text::attach_tools(messages, tools);
  text::ChatOptions options;
  options.thinking = thinking;
  options.reasoning_effort = effort;
  try {
    return encode_chat_prompt(ctx.tokenizer, messages, options);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    MEGAMOE_BAD_REQUEST("messages", e.what());
  }
}

// reasoning_effort as OpenAI clients send it, mapped to DeepSeek-V4's two levels.
std::string effort_level(const std::string& effort, const std::string& param) {
  if (effort == "minimal" || effort == "low" || effort == "medium" || effort == "high") return "high";
  if (effort == "max" || effort == "xhigh") return "max";
  MEGAMOE_BAD_REQUEST(param, param, " '", effort, "' is not one of none, minimal, low, medium, high, max");
}

}  // namespace

json parse_body(const std::string& body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {  // syntax, invalid UTF-8, numbers out of range
    MEGAMOE_BAD_REQUEST("", "the request body is not valid JSON: ", e.what());
  }
  if (!j.is_object()) MEGAMOE_BAD_REQUEST("", "the request body must be a JSON object, got ", j.type_name());
  return j;
}

GenerationParams choice_params(const GenerationParams& gen, int64_t i) {
  GenerationParams p = gen;
  p.sampling.seed += static_cast<uint64_t>(i);
  return p;
}

ParsedRequest parse_chat_request(const json& body, const ApiContext& ctx) {
  ParsedRequest r;
  reject_unsupported_common(body);
  common_fields(body, ctx, r);
  json messages = normalize_messages(body);

  json tools = json::array();
  if (const json* t = member(body, "tools")) tools = check_tools(*t);
  if (const json* choice = member(body, "tool_choice")) {
    if (choice->is_string()) {
      const std::string c = choice->get<std::string>();
      if (c == "none") {
        tools = json::array();
      } else if (c == "required") {
        MEGAMOE_BAD_REQUEST("tool_choice", "tool_choice 'required' is not supported (no constrained decoding); use 'auto'");
      } else if (c != "auto") {
        MEGAMOE_BAD_REQUEST("tool_choice", "tool_choice '", c, "' is not one of auto, none");
      }
    } else if (choice->is_object()) {
      MEGAMOE_BAD_REQUEST("tool_choice", "tool_choice naming a function is not supported (no constrained decoding); "
                          "use 'auto'");
    } else {
      wrong_type("tool_choice", "a string", *choice);
    }
  }
  r.has_tools = !tools.empty();

  // Thinking: chat_template_kwargs.thinking (vLLM / SGLang), DeepSeek's
  // {"thinking": {"type": "enabled"}}, or a reasoning_effort other than none.
  bool thinking = false;
  std::string effort;
  if (const json* e = member(body, "reasoning_effort")) {
    if (!e->is_string()) wrong_type("reasoning_effort", "a string", *e);
    if (e->get<std::string>() != "none") {
      effort = effort_level(e->get<std::string>(), "reasoning_effort");
      thinking = true;
    }
  }
  if (const json* t = member(body, "thinking")) {
    if (!t->is_object()) wrong_type("thinking", "an object", *t);
    const std::string type = string_field(*t, "type", "enabled", "thinking.type");
    if (type != "enabled" && type != "disabled") {
      MEGAMOE_BAD_REQUEST("thinking.type", "thinking.type '", type, "' is not one of enabled, disabled");
    }
    thinking = type == "enabled";
  }
  if (const json* kw = member(body, "chat_template_kwargs")) {
    if (!kw->is_object()) wrong_type("chat_template_kwargs", "an object", *kw);
    for (const char* key : {"thinking", "enable_thinking"}) {
      if (member(*kw, key)) thinking = boolean(*kw, key, thinking, std::string("chat_template_kwargs.") + key);
    }
    if (const json* e = member(*kw, "reasoning_effort")) {
      if (!e->is_string()) wrong_type("chat_template_kwargs.reasoning_effort", "a string", *e);
      effort = effort_level(e->get<std::string>(), "chat_template_kwargs.reasoning_effort");
    }
  }
  if (!thinking) effort.clear();

  r.gen.prompt = encode_chat_messages(ctx, std::move(messages), tools, thinking, effort);
  r.text.chat = true;
  r.text.thinking = thinking;
  r.text.stop_strings = stop_strings(body, "stop");
  r.gen.sampling = sampling(body, 1.0);
  r.gen.adjust = logit_adjustments(body, ctx, r.text.eos_ids);
  max_tokens(body, {"max_completion_tokens", "max_tokens"}, 0, ctx, r);
  r.gen.want_logprobs = boolean(body, "logprobs", false, "logprobs");
  r.gen.top_logprobs = integer(body, "top_logprobs", 0, 0, 20, "top_logprobs");
  if (r.gen.top_logprobs > 0 && !r.gen.want_logprobs) {
    MEGAMOE_BAD_REQUEST("top_logprobs", "top_logprobs needs logprobs: true");
  }
  return r;
}

ParsedRequest parse_completion_request(const json& body, const ApiContext& ctx) {
  ParsedRequest r;
  reject_unsupported_common(body);
  unsupported_unless(body, "echo", [](const json& v) { return v.is_boolean() && !v.get<bool>(); }, "echo must be false");
  unsupported_unless(body, "suffix", [](const json& v) { return v.is_string() && v.get<std::string>().empty(); }, "");
  common_fields(body, ctx, r);
  const json* prompt = member(body, "prompt");
  if (!prompt) MEGAMOE_BAD_REQUEST("prompt", "prompt is missing");
  auto ids_of = [&](const json& arr, const std::string& path) {
    std::vector<int32_t> ids;
    for (std::size_t i = 0; i < arr.size(); ++i) {
      if (!arr[i].is_number_integer()) wrong_type(path + "[" + std::to_string(i) + "]", "a token id", arr[i]);
      const int64_t id = arr[i].get<int64_t>();
      if (id < 0 || id >= ctx.model_vocab) {
        MEGAMOE_BAD_REQUEST(path, path, "[", i, "] = ", id, " is outside the vocabulary (", ctx.model_vocab, " tokens)");
      }
      ids.push_back(static_cast<int32_t>(id));
    }
    if (ids.empty()) MEGAMOE_BAD_REQUEST(path, path, " must not be empty");
    return ids;
  };
  if (prompt->is_string()) {
    r.gen.prompt = encode_prompt_text(ctx, prompt->get<std::string>(), "prompt");
  } else if (prompt->is_array()) {
    if (prompt->empty()) MEGAMOE_BAD_REQUEST("prompt", "prompt must not be empty");
    const json& first = (*prompt)[0];
    if (first.is_number_integer()) {
      r.gen.prompt = ids_of(*prompt, "prompt");
    } else {
      if (prompt->size() != 1) {
        MEGAMOE_BAD_REQUEST("prompt", "prompt has ", prompt->size(), " prompts; one prompt per request is served");
      }
      if (first.is_string()) {
        r.gen.prompt = encode_prompt_text(ctx, first.get<std::string>(), "prompt[0]");
      } else if (first.is_array()) {
        r.gen.prompt = ids_of(first, "prompt[0]");
      } else {
        wrong_type("prompt[0]", "a string or an array of token ids", first);
      }
    }
  } else {
    wrong_type("prompt", "a string or an array", *prompt);
  }
  r.text.stop_strings = stop_strings(body, "stop");
  r.gen.sampling = sampling(body, 1.0);
  r.gen.adjust = logit_adjustments(body, ctx, r.text.eos_ids);
  max_tokens(body, {"max_tokens"}, 16, ctx, r);
  const int64_t logprobs = integer(body, "logprobs", -1, 0, 20, "logprobs");
  r.gen.want_logprobs = logprobs >= 0;
  r.gen.top_logprobs = std::max<int64_t>(logprobs, 0);
  return r;
}

// ---- Anthropic messages ----

namespace {

// Anthropic content (string or blocks) appended to OpenAI-style messages.
void anthropic_message(const json& m, std::size_t i, json& out) {
  const std::string p = "messages[" + std::to_string(i) + "]";
  if (!m.is_object()) wrong_type(p, "an object", m);
  const std::string role = string_field(m, "role", "", p + ".role");
  if (role != "user" && role != "assistant") {
    MEGAMOE_BAD_REQUEST(p + ".role", p, ".role '", role, "' is not one of user, assistant");
  }
  const json* content = member(m, "content");
  if (!content) MEGAMOE_BAD_REQUEST(p + ".content", p, ".content is missing");
  if (content->is_string()) {
    out.push_back(json{{"role", role}, {"content", *content}});
    return;
  }
  if (!content->is_array()) wrong_type(p + ".content", "a string or an array of content blocks", *content);
  std::string text, reasoning;
  json calls = json::array();
  auto flush_user_text = [&] {
    if (role == "user" && !text.empty()) {
      out.push_back(json{{"role", "user"}, {"content", text}});
      text.clear();
    }
  };
  for (std::size_t j = 0; j < content->size(); ++j) {
    const json& b = (*content)[j];
    const std::string bp = p + ".content[" + std::to_string(j) + "]";
    if (!b.is_object()) wrong_type(bp, "an object", b);
    const std::string type = string_field(b, "type", "", bp + ".type");
    if (type == "text") {
      const json* t = member(b, "text");
      if (!t || !t->is_string()) MEGAMOE_BAD_REQUEST(bp + ".text", bp, ".text must be a string");
      if (!text.empty()) text += "\n";
      text += t->get<std::string>();
    } else if (type == "thinking" && role == "assistant") {
      reasoning += string_field(b, "thinking", "", bp + ".thinking");
    } else if (type == "redacted_thinking" && role == "assistant") {
    } else if (type == "tool_use" && role == "assistant") {
      const std::string name = string_field(b, "name", "", bp + ".name");
      if (name.empty()) MEGAMOE_BAD_REQUEST(bp + ".name", bp, ".name must be a non-empty string");
      const json* input = member(b, "input");
      if (input && !input->is_object()) wrong_type(bp + ".input", "an object", *input);
      calls.push_back(json{{"id", string_field(b, "id", "", bp + ".id")},
                           {"type", "function"},
                           {"function", {{"name", name}, {"arguments", input ? input->dump() : "{}"}}}});
    } else if (type == "tool_result" && role == "user") {
      flush_user_text();
      std::string result;
      if (const json* c = member(b, "content")) result = content_text(*c, bp + ".content");
      if (boolean(b, "is_error", false, bp + ".is_error")) result = "Error: " + result;
      out.push_back(json{{"role", "tool"},
                         {"tool_call_id", string_field(b, "tool_use_id", "", bp + ".tool_use_id")},
                         {"content", result}});
    } else {
      MEGAMOE_BAD_REQUEST(bp + ".type", bp, ".type '", type, "' is not supported in a ", role, " message");
    }
  }
  if (role == "user") {
    flush_user_text();
  } else {
    json a = {{"role", "assistant"}, {"content", text}};
    if (!reasoning.empty()) a["reasoning_content"] = reasoning;
    if (!calls.empty()) a["tool_calls"] = calls;
    out.push_back(std::move(a));
  }
}

}  // namespace

ParsedRequest parse_messages_request(const json& body, const ApiContext& ctx, bool count_tokens) {
  ParsedRequest r;
  r.model = string_field(body, "model", "", "model");
  r.stream = boolean(body, "stream", false, "stream");
  if (!count_tokens && !member(body, "max_tokens")) {
    MEGAMOE_BAD_REQUEST("max_tokens", "max_tokens is missing (it is required)");
  }
  const bool ignore_eos = boolean(body, "ignore_eos", false, "ignore_eos");
  if (!ignore_eos && ctx.eos_id >= 0) r.text.eos_ids = {static_cast<int32_t>(ctx.eos_id)};

  json messages = json::array();
  if (const json* system = member(body, "system")) {
    messages.push_back(json{{"role", "system"}, {"content", content_text(*system, "system")}});
  }
  const json* list = member(body, "messages");
  if (!list) MEGAMOE_BAD_REQUEST("messages", "messages is missing");
  if (!list->is_array()) wrong_type("messages", "an array", *list);
  if (list->empty()) MEGAMOE_BAD_REQUEST("messages", "messages must not be empty");
  for (std::size_t i = 0; i < list->size(); ++i) anthropic_message((*list)[i], i, messages);

  json tools = json::array();
  if (const json* t = member(body, "tools")) {
    if (!t->is_array()) wrong_type("tools", "an array", *t);
    for (std::size_t i = 0; i < t->size(); ++i) {
      const json& tool = (*t)[i];
      const std::string p = "tools[" + std::to_string(i) + "]";
      if (!tool.is_object()) wrong_type(p, "an object", tool);
      const std::string name = string_field(tool, "name", "", p + ".name");
      if (name.empty()) MEGAMOE_BAD_REQUEST(p + ".name", p, ".name must be a non-empty string");
      json f = {{"name", name}};
      if (const json* d = member(tool, "description")) {
        if (!d->is_string()) wrong_type(p + ".description", "a string", *d);
        f["description"] = *d;
      }
      if (const json* s = member(tool, "input_schema")) {
        if (!s->is_object()) wrong_type(p + ".input_schema", "an object", *s);
        f["parameters"] = *s;
      }
      tools.push_back(json{{"type", "function"}, {"function", f}});
    }
  }
  if (const json* choice = member(body, "tool_choice")) {
    if (!choice->is_object()) wrong_type("tool_choice", "an object", *choice);
    const std::string type = string_field(*choice, "type", "auto", "tool_choice.type");
    if (type == "none") {
      tools = json::array();
    } else if (type != "auto") {
      MEGAMOE_BAD_REQUEST("tool_choice", "tool_choice '", type, "' is not supported (no constrained decoding); use auto");
    }
  }
  r.has_tools = !tools.empty();
  bool thinking = false;
  if (const json* t = member(body, "thinking")) {
    if (!t->is_object()) wrong_type("thinking", "an object", *t);
    const std::string type = string_field(*t, "type", "", "thinking.type");
    if (type != "enabled" && type != "disabled") {
      MEGAMOE_BAD_REQUEST("thinking.type", "thinking.type '", type, "' is not one of enabled, disabled");
    }
    thinking = type == "enabled";
  }
  r.gen.prompt = encode_chat_messages(ctx, std::move(messages), tools, thinking, "");
  r.text.chat = true;
  r.text.thinking = thinking;
  r.text.stop_strings = stop_strings(body, "stop_sequences");
  r.gen.sampling = sampling(body, 1.0);
  max_tokens(body, {"max_tokens"}, 0, ctx, r);
  return r;
}

}  // namespace megamoe::server
