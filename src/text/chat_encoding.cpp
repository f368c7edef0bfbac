#include "text/chat_encoding.hpp"

#include <algorithm>
#include <map>
#include <vector>

#include "core/error.hpp"
#include "text/python_json.hpp"

namespace megamoe::text {
namespace {

using json = nlohmann::ordered_json;
using namespace chat_tokens;

const std::string kDsmlTag = kDsml;

const char* const kEffortMaxPrefix =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

const std::map<std::string, std::string>& task_tokens() {
  static const std::map<std::string, std::string> m = {
      {"action", "<｜action｜>"}, {"query", "<｜query｜>"}, {"authority", "<｜authority｜>"},
      {"domain", "<｜domain｜>"}, {"title", "<｜title｜>"}, {"read_url", "<｜read_url｜>"}};
  return m;
}

// Python truthiness of an optional field.
bool truthy(const json& msg, const char* key) {
  if (!msg.contains(key)) return false;
  const json& v = msg[key];
  if (v.is_null()) return false;
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string() || v.is_array() || v.is_object()) return !v.empty();
  if (v.is_number()) return v.get<double>() != 0;
  return true;
}

// Prompt text under construction: template markup appended with +=, text that
// came from the messages with add() (its byte range is recorded, so that it is
// tokenized as plain text, never as control tokens).
struct Out {
  std::string text;
  std::vector<TextRange> content;

  Out& operator+=(const std::string& markup) {
    text += markup;
    return *this;
  }
  Out& operator+=(const char* markup) {
    text += markup;
    return *this;
  }
  Out& operator+=(const Out& other) {
    for (const TextRange& r : other.content) add_range(text.size() + r.begin, text.size() + r.end);
    text += other.text;
    return *this;
  }
  Out& add(const std::string& user_text) {
    add_range(text.size(), text.size() + user_text.size());
    text += user_text;
    return *this;
  }

 private:
  void add_range(std::size_t b, std::size_t e) {
    if (b == e) return;
    if (!content.empty() && content.back().end == b) {
      content.back().end = e;
    } else {
      content.push_back(TextRange{b, e});
    }
  }
};

[[noreturn]] void bad(std::size_t index, const std::string& field, const std::string& problem) {
  MEGAMOE_THROW("chat message ", index, ": ", field, ": ", problem);
}

// A string field that may be absent or null ("" then); anything else is an error.
std::string optional_string(const json& msg, const char* key, std::size_t index) {
  if (!msg.contains(key) || msg[key].is_null()) return "";
  if (!msg[key].is_string()) bad(index, key, "must be a string, got " + std::string(msg[key].type_name()));
  return msg[key].get<std::string>();
}

Out render_tools(const json& tools, std::size_t index) {
  Out schemas;
  if (!tools.is_array()) bad(index, "tools", "must be a list");
  for (std::size_t i = 0; i < tools.size(); ++i) {
    if (!tools[i].is_object() || !tools[i].contains("function"))
      bad(index, "tools[" + std::to_string(i) + "]", "expected {\"type\": \"function\", \"function\": {...}}");
    if (i) schemas += "\n";
    schemas.add(python_json_dumps(tools[i]["function"]));
  }
  const std::string& d = kDsmlTag;
  Out out;
  out += "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by "
         "writing a \"<" + d + "tool_calls>\" block like the following:\n\n<" + d + "tool_calls>\n<" + d +
         "invoke name=\"$TOOL_NAME\">\n<" + d +
         "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" + d + "parameter>\n...\n</" + d +
         "invoke>\n<" + d + "invoke name=\"$TOOL_NAME2\">\n...\n</" + d + "invoke>\n</" + d +
         "tool_calls>\n\nString parameters should be specified as is and set `string=\"true\"`. For all other types "
         "(numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\nIf "
         "thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside "
         "<think>...</think> BEFORE any tool calls or final response.\n\nOtherwise, output directly after </think> "
         "with tool calls or final response.\n\n### Available Tool Schemas\n\n";
  out += schemas;
  out += "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
  return out;
}

Out render_response_format(const json& format) {
  Out out;
  out += "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";
  out.add(python_json_dumps(format));
  return out;
}

// One tool call's parameters: string values as is, others as JSON.
Out render_arguments(const json& function, std::size_t index) {
  json args;
  const json raw = function.contains("arguments") ? function["arguments"] : json();
  bool parsed = false;
  if (raw.is_string()) {
    try {
      args = json::parse(raw.get<std::string>());
      parsed = true;
    } catch (const json::exception&) {
    }
  }
  if (!parsed) args = json{{"arguments", raw}};  // unparsable or not a string: kept whole
  if (!args.is_object()) bad(index, "tool_calls[].function.arguments", "must be a JSON object");
  Out out;
  for (auto it = args.begin(); it != args.end(); ++it) {
    if (it != args.begin()) out += "\n";
    const bool is_string = it.value().is_string();
    out += "<" + kDsmlTag + "parameter name=\"";
    out.add(it.key());
    out += std::string("\" string=\"") + (is_string ? "true" : "false") + "\">";
    out.add(is_string ? it.value().get<std::string>() : python_json_dumps(it.value()));
    out += "</" + kDsmlTag + "parameter>";
  }
  return out;
}

Out render_tool_calls(const json& calls, std::size_t index) {
  Out list;
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const json& c = calls[i];
    if (!c.is_object() || !c.contains("function") || !c["function"].is_object() || !c["function"].contains("name"))
      bad(index, "tool_calls[" + std::to_string(i) + "]", "expected {\"function\": {\"name\", \"arguments\"}}");
    const json& f = c["function"];
    const std::string name = f["name"].is_string() ? f["name"].get<std::string>() : python_json_dumps(f["name"]);
    if (i) list += "\n";
    list += "<" + kDsmlTag + "invoke name=\"";
    list.add(name);
    list += "\">\n";
    list += render_arguments(f, index);
    list += "\n</" + kDsmlTag + "invoke>";
  }
  Out out;
  out += "\n\n<" + kDsmlTag + "tool_calls>\n";
  out += list;
  out += "\n</" + kDsmlTag + "tool_calls>";
  return out;
}

std::string tool_result_text(const json& content, std::size_t index) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string out;
    for (std::size_t i = 0; i < content.size(); ++i) {
      const json& b = content[i];
      if (i) out += "\n\n";
      const std::string type = b.is_object() && b.contains("type") && b["type"].is_string() ? b["type"].get<std::string>() : "None";
      if (type == "text") {
        out += optional_string(b, "text", index);
      } else {
        out += "[Unsupported " + type + "]";
      }
    }
    return out;
  }
  bad(index, "content", "a tool result must be a string or a list of content blocks");
}

// Tool messages become <tool_result> blocks of user turns; consecutive user
// turns are merged into one (joined by blank lines).
json merge_tool_messages(const json& messages) {
  json merged = json::array();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const json& msg = messages[i];
    if (!msg.is_object() || !msg.contains("role") || !msg["role"].is_string()) bad(i, "role", "missing or not a string");
    const std::string role = msg["role"];
    const bool last_is_user_blocks = !merged.empty() && merged.back()["role"] == "user" && merged.back().contains("content_blocks");
    if (role == "tool") {
      json block = {{"type", "tool_result"},
                    {"tool_use_id", msg.contains("tool_call_id") ? msg["tool_call_id"] : json("")},
                    {"content", tool_result_text(msg.contains("content") ? msg["content"] : json(""), i)}};
      if (last_is_user_blocks) {
        merged.back()["content_blocks"].push_back(block);
      } else {
        merged.push_back(json{{"role", "user"}, {"content_blocks", json::array({block})}});
      }
    } else if (role == "user") {
      if (msg.contains("content") && !msg["content"].is_string()) bad(i, "content", "must be a string");
      json block = {{"type", "text"}, {"text", optional_string(msg, "content", i)}};
      const bool last_has_task = last_is_user_blocks && merged.back().contains("task") && !merged.back()["task"].is_null();
      if (last_is_user_blocks && !last_has_task) {
        merged.back()["content_blocks"].push_back(block);
      } else {
        json m = {{"role", "user"}, {"content", block["text"]}, {"content_blocks", json::array({block})}};
        for (const char* key : {"task", "wo_eos", "mask"}) {
          if (msg.contains(key)) m[key] = msg[key];
        }
        merged.push_back(std::move(m));
      }
    } else {
      merged.push_back(msg);
    }
  }
  return merged;
}

std::string tool_call_id(const json& call) {
  for (const json* holder : {&call, call.contains("function") ? &call["function"] : nullptr}) {
    if (holder && holder->is_object() && holder->contains("id") && (*holder)["id"].is_string() &&
        !(*holder)["id"].get<std::string>().empty())
      return (*holder)["id"];
  }
  return "";
}

// Tool results in a user turn follow the order of the calls that asked for them.
void sort_tool_results(json& messages) {
  std::map<std::string, std::size_t> order;
  for (json& msg : messages) {
    if (msg["role"] == "assistant" && truthy(msg, "tool_calls")) {
      order.clear();
      for (std::size_t i = 0; i < msg["tool_calls"].size(); ++i) {
        const std::string id = tool_call_id(msg["tool_calls"][i]);
        if (!id.empty()) order[id] = i;
      }
    } else if (msg["role"] == "user" && truthy(msg, "content_blocks")) {
      std::vector<json> results;
      for (const json& b : msg["content_blocks"]) {
        if (b.value("type", "") == "tool_result") results.push_back(b);
      }
      if (results.size() < 2 || order.empty()) continue;
      auto rank = [&](const json& b) {
        const json id = b.contains("tool_use_id") ? b["tool_use_id"] : json("");
        const auto it = id.is_string() ? order.find(id.get<std::string>()) : order.end();
        return it == order.end() ? std::size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(), [&](const json& a, const json& b) { return rank(a) < rank(b); });
      std::size_t next = 0;
      for (json& b : msg["content_blocks"]) {
        if (b.value("type", "") == "tool_result") b = results[next++];
      }
    }
  }
}

std::ptrdiff_t last_user_index(const json& messages) {
  for (std::ptrdiff_t i = static_cast<std::ptrdiff_t>(messages.size()) - 1; i >= 0; --i) {
    const std::string role = messages[static_cast<std::size_t>(i)]["role"];
    if (role == "user" || role == "developer") return i;
  }
  return -1;
}

// Reasoning of assistant turns before the last user turn is dropped; so are
// roles other than user/system/tool/latest_reminder there (developer).
json drop_old_thinking(const json& messages) {
  const std::ptrdiff_t last_user = last_user_index(messages);
  json out = json::array();
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const std::string role = messages[i]["role"];
    const bool keep = role == "user" || role == "system" || role == "tool" || role == "latest_reminder" ||
                      role == "direct_search_results" || static_cast<std::ptrdiff_t>(i) >= last_user;
    if (keep) {
      out.push_back(messages[i]);
    } else if (role == "assistant") {
      json m = messages[i];
      m.erase("reasoning_content");
      out.push_back(std::move(m));
    }
  }
  return out;
}

bool has_task(const json& msg) { return msg.contains("task") && !msg["task"].is_null(); }

Out render_message(std::size_t index, const json& messages, const ChatOptions& opt, bool drop_thinking) {
  const json& msg = messages[index];
  const auto last_user = last_user_index(messages);
  const auto idx = static_cast<std::ptrdiff_t>(index);
  const std::string role = msg["role"];
  Out out;
  if (index == 0 && opt.thinking && opt.reasoning_effort == "max") out += kEffortMaxPrefix;

  auto append_tools_and_format = [&](Out& s) {
    if (truthy(msg, "tools")) {
      s += "\n\n";
      s += render_tools(msg["tools"], index);
    }
    if (truthy(msg, "response_format")) {
      s += "\n\n";
      s += render_response_format(msg["response_format"]);
    }
  };

  if (role == "system") {
    out.add(optional_string(msg, "content", index));
    append_tools_and_format(out);
  } else if (role == "developer") {
    const std::string content = optional_string(msg, "content", index);
    if (content.empty()) bad(index, "content", "a developer message needs content");
    out += kUser;
    out.add(content);
    append_tools_and_format(out);
  } else if (role == "user") {
    out += kUser;
    const json& blocks = msg["content_blocks"];
    for (std::size_t i = 0; i < blocks.size(); ++i) {
      const json& b = blocks[i];
      if (i) out += "\n\n";
      const std::string type = b.value("type", "");
      if (type == "text") {
        out.add(b["text"].get<std::string>());
      } else if (type == "tool_result") {
        out += "<tool_result>";
        out.add(b["content"].get<std::string>());
        out += "</tool_result>";
      } else {
        out.add("[Unsupported " + type + "]");
      }
    }
  } else if (role == "latest_reminder") {
    if (!msg.contains("content") || !msg["content"].is_string()) bad(index, "content", "must be a string");
    out += kLatestReminder;
    out.add(msg["content"].get<std::string>());
  } else if (role == "assistant") {
    Out calls;
    if (truthy(msg, "tool_calls")) {
      if (!msg["tool_calls"].is_array()) bad(index, "tool_calls", "must be a list");
      calls = render_tool_calls(msg["tool_calls"], index);
    }
    const bool prev_has_task = index > 0 && has_task(messages[index - 1]);
    if (opt.thinking && !prev_has_task && (!drop_thinking || idx > last_user)) {
      out.add(optional_string(msg, "reasoning_content", index));
      out += kThinkEnd;
    }
    out.add(optional_string(msg, "content", index));
    out += calls;
    if (!truthy(msg, "wo_eos")) out += kEos;
  } else {
    bad(index, "role", "unknown role '" + role + "'");
  }

  // What follows this message: nothing unless the next turn is the model's.
  if (index + 1 < messages.size()) {
    const std::string next = messages[index + 1]["role"];
    if (next != "assistant" && next != "latest_reminder") return out;
  }
  if (has_task(msg)) {
    if (!msg["task"].is_string() || !task_tokens().count(msg["task"].get<std::string>()))
      bad(index, "task", "unknown task " + msg["task"].dump());
    const std::string task = msg["task"];
    if (task != "action") {
      out += task_tokens().at(task);
    } else {
      out += std::string(kAssistant) + (opt.thinking ? kThinkStart : kThinkEnd) + task_tokens().at(task);
    }
  } else if (role == "user" || role == "developer") {
    const bool open_thinking = opt.thinking && (!drop_thinking || idx >= last_user);
    out += std::string(kAssistant) + (open_thinking ? kThinkStart : kThinkEnd);
  }
  return out;
}

}  // namespace

ChatPrompt render_chat(const nlohmann::ordered_json& messages, const ChatOptions& options) {
  MEGAMOE_CHECK(messages.is_array(), "chat messages must be a JSON array");
  MEGAMOE_CHECK(options.reasoning_effort.empty() || options.reasoning_effort == "high" ||
                    options.reasoning_effort == "max",
                "reasoning effort '", options.reasoning_effort, "' is not one of high, max");
  json full = merge_tool_messages(messages);
  sort_tool_results(full);

  bool drop = options.drop_thinking;
  for (const json& m : full) {
    if (truthy(m, "tools")) drop = false;  // tool use keeps all reasoning
  }
  if (options.thinking && drop) full = drop_old_thinking(full);

  Out prompt;
  if (options.add_bos) prompt += kBos;
  for (std::size_t i = 0; i < full.size(); ++i) prompt += render_message(i, full, options, drop);
  return ChatPrompt{std::move(prompt.text), std::move(prompt.content)};
}

std::string encode_chat(const nlohmann::ordered_json& messages, const ChatOptions& options) {
  return render_chat(messages, options).text;
}

std::vector<TokenId> encode_chat_ids(const Tokenizer& tokenizer, const nlohmann::ordered_json& messages,
                                     const ChatOptions& options) {
  const ChatPrompt prompt = render_chat(messages, options);
  if (options.special_tokens_in_content) return tokenizer.encode(prompt.text);
  return tokenizer.encode(prompt.text, prompt.content);
}

nlohmann::ordered_json attach_tools(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools) {
  MEGAMOE_CHECK(messages.is_array(), "chat messages must be a JSON array");
  MEGAMOE_CHECK(tools.is_array(), "tools must be a JSON array");
  json out = messages;
  for (json& m : out) {
    if (m.is_object() && m.value("role", "") == "system") {
      m["tools"] = tools;
      return out;
    }
  }
  out.insert(out.begin(), json{{"role", "system"}, {"content", ""}, {"tools", tools}});
  return out;
}

}  // namespace megamoe::text
