// DeepSeek-V4 config.json -> ModelConfig. Both the transformers form and the
// upstream (DeepSeek) form are accepted; where both spellings of a setting are
// present they must agree. Resolution rules mirror transformers 5.17's
// DeepseekV4Config.__post_init__ (dsv4-architecture.md §2.2-2.4), except that
// we refuse to guess: a schedule or RoPE setting that is absent is an error,
// not a silent default.
#include "core/model_config.hpp"

#include <cmath>
#include <cstdio>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/json_file.hpp"

namespace megamoe {
namespace {

using nlohmann::json;

// A double for messages: %.9g, never hundreds of digits.
// A JSON value for messages, cut short.
std::string short_dump(const json& value) { return quote_for_message(value.dump(), 60); }

std::string num(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.9g", value);
  return text;
}

constexpr std::string_view kSliding = "sliding_attention";
constexpr std::string_view kCsa = "compressed_sparse_attention";
constexpr std::string_view kHca = "heavily_compressed_attention";

// Reads fields of one JSON object and names `source` + the field path in every error.
class FieldReader {
 public:
  FieldReader(const json& object, std::string source, std::string path = "")
      : object_(&object), source_(std::move(source)), path_(std::move(path)) {}

  std::string field_name(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& source() const { return source_; }

  bool has(const std::string& key) const { return object_->contains(key) && !object_->at(key).is_null(); }
  bool is_null(const std::string& key) const { return object_->contains(key) && object_->at(key).is_null(); }
  const json& raw(const std::string& key) const { return object_->at(key); }
  const json& object() const { return *object_; }

  [[noreturn]] void fail(const std::string& key, const std::string& problem) const {
    MEGAMOE_THROW(source_, ": field '", field_name(key), "' ", problem);
  }

  std::optional<int64_t> opt_int(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    const json& value = raw(key);
    if (value.is_number_integer()) return value.get<int64_t>();
    // Some writers emit integral values as floats (e.g. 65536.0); accept only exact integers.
    if (value.is_number_float()) {
      const double d = value.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15) return static_cast<int64_t>(d);
    }
    fail(key, "must be an integer, got " + short_dump(value));
  }
  int64_t req_int(const std::string& key) const {
    auto value = opt_int(key);
    if (!value) fail(key, "is missing");
    return *value;
  }
  int64_t req_positive(const std::string& key) const {
    const int64_t value = req_int(key);
    if (value <= 0) fail(key, "must be positive, got " + std::to_string(value));
    return value;
  }
  // An integer field within [lo, hi]: "field 'x' is V, outside the allowed range [lo, hi]".
  int64_t req_int_in(const std::string& key, int64_t lo, int64_t hi) const {
    const int64_t value = req_int(key);
    check_int_range(key, value, lo, hi);
    return value;
  }
  void check_int_range(const std::string& key, int64_t value, int64_t lo, int64_t hi) const {
    if (value < lo || value > hi) {
      fail(key, "is " + std::to_string(value) + ", outside the allowed range [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
    }
  }
  // A number within [lo, hi], or (lo, hi] when lo_open.
  void check_double_range(const std::string& key, double value, double lo, double hi, bool lo_open = false) const {
    if (value < lo || value > hi || (lo_open && value == lo)) {
      fail(key, "is " + num(value) + ", outside the allowed range " + (lo_open ? "(" : "[") + num(lo) + ", " + num(hi) +
                    "]");
    }
  }
  double req_double_in(const std::string& key, double lo, double hi, bool lo_open = false) const {
    const double value = req_double(key);
    check_double_range(key, value, lo, hi, lo_open);
    return value;
  }
  std::optional<double> opt_double(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    const json& value = raw(key);
    if (!value.is_number()) fail(key, "must be a number, got " + short_dump(value));
    const double d = value.get<double>();
    if (!std::isfinite(d)) fail(key, "must be finite");
    return d;
  }
  double req_double(const std::string& key) const {
    auto value = opt_double(key);
    if (!value) fail(key, "is missing");
    return *value;
  }
  std::optional<std::string> opt_string(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    if (!raw(key).is_string()) fail(key, "must be a string, got " + short_dump(raw(key)));
    return raw(key).get<std::string>();
  }
  std::string req_string(const std::string& key) const {
    auto value = opt_string(key);
    if (!value) fail(key, "is missing");
    return *value;
  }
  std::optional<bool> opt_bool(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    if (!raw(key).is_boolean()) fail(key, "must be true or false, got " + short_dump(raw(key)));
    return raw(key).get<bool>();
  }
  std::optional<FieldReader> opt_object(const std::string& key) const {
    if (!has(key)) return std::nullopt;
    if (!raw(key).is_object()) fail(key, "must be an object, got " + short_dump(raw(key)));
    return FieldReader(raw(key), source_, field_name(key));
  }
  const json* opt_array(const std::string& key) const {
    if (!has(key)) return nullptr;
    if (!raw(key).is_array()) fail(key, "must be a list, got " + short_dump(raw(key)));
    return &raw(key);
  }

 private:
  const json* object_;
  std::string source_;
  std::string path_;
};

std::optional<AttentionType> attention_type_from_name(std::string_view name) {
  if (name == kSliding) return AttentionType::kSliding;
  if (name == kCsa) return AttentionType::kCompressedSparse;
  if (name == kHca) return AttentionType::kHeavilyCompressed;
  return std::nullopt;
}

// Legacy compress_ratios hold 0/4/128 and only select the type (transformers'
// _COMPRESS_RATIO_TO_LAYER_TYPE); the rate itself comes from compress_rates.
std::optional<AttentionType> attention_type_from_ratio(int64_t ratio) {
  if (ratio == 0) return AttentionType::kSliding;
  if (ratio == 4) return AttentionType::kCompressedSparse;
  if (ratio == 128) return AttentionType::kHeavilyCompressed;
  return std::nullopt;
}

struct CompressRates {
  int64_t csa = 4;
  int64_t hca = 128;
};

CompressRates resolve_compress_rates(const FieldReader& cfg) {
  CompressRates rates;
  std::optional<int64_t> dict_csa, dict_hca;
  if (auto dict = cfg.opt_object("compress_rates")) {
    for (const auto& [key, value] : dict->object().items()) {
      (void)value;
      if (key != kCsa && key != kHca) dict->fail(key, "is not an attention type with a compression rate");
    }
    dict_csa = dict->opt_int(std::string(kCsa));
    dict_hca = dict->opt_int(std::string(kHca));
  }
  const auto scalar_csa = cfg.opt_int("compress_rate_csa");
  const auto scalar_hca = cfg.opt_int("compress_rate_hca");
  auto pick = [&](std::optional<int64_t> from_dict, std::optional<int64_t> scalar, const std::string& scalar_key,
                  int64_t fallback) {
    if (from_dict && scalar && *from_dict != *scalar) {
      cfg.fail(scalar_key, "(" + std::to_string(*scalar) + ") contradicts compress_rates (" +
                               std::to_string(*from_dict) + ")");
    }
    const int64_t rate = scalar ? *scalar : from_dict ? *from_dict : fallback;
    cfg.check_int_range(scalar ? scalar_key : "compress_rates", rate, 1, int64_t{1} << 16);
    return rate;
  };
  rates.csa = pick(dict_csa, scalar_csa, "compress_rate_csa", rates.csa);
  rates.hca = pick(dict_hca, scalar_hca, "compress_rate_hca", rates.hca);
  return rates;
}

void resolve_attention_schedule(const FieldReader& cfg, ModelConfig& config) {
  const int64_t n = config.num_layers;
  std::optional<std::vector<AttentionType>> from_names, from_ratios;
  if (const json* names = cfg.opt_array("layer_types")) {
    if (static_cast<int64_t>(names->size()) != n) {
      cfg.fail("layer_types", "has " + std::to_string(names->size()) + " entries but num_hidden_layers is " +
                                  std::to_string(n));
    }
    from_names.emplace();
    for (size_t i = 0; i < names->size(); ++i) {
      const json& entry = (*names)[i];
      auto type = entry.is_string() ? attention_type_from_name(entry.get<std::string>()) : std::nullopt;
      if (!type) {
        cfg.fail("layer_types[" + std::to_string(i) + "]",
                 "must be one of sliding_attention, compressed_sparse_attention, heavily_compressed_attention; got " +
                     short_dump(entry));
      }
      from_names->push_back(*type);
    }
  }
  if (const json* ratios = cfg.opt_array("compress_ratios")) {
    // Upstream lists one entry per main layer plus one per MTP block (the trailing slots).
    const auto size = static_cast<int64_t>(ratios->size());
    if (size != n && size != n + config.num_nextn_predict_layers) {
      cfg.fail("compress_ratios", "has " + std::to_string(size) + " entries; expected num_hidden_layers (" +
                                      std::to_string(n) + ") or num_hidden_layers + num_nextn_predict_layers (" +
                                      std::to_string(n + config.num_nextn_predict_layers) + ")");
    }
    from_ratios.emplace();
    for (int64_t i = 0; i < size; ++i) {
      const json& entry = (*ratios)[i];
      auto type = entry.is_number_integer() ? attention_type_from_ratio(entry.get<int64_t>()) : std::nullopt;
      if (!type) {
        cfg.fail("compress_ratios[" + std::to_string(i) + "]",
                 "must be 0 (sliding), 4 (CSA) or 128 (HCA; set compress_rate_hca for another rate); got " +
                     short_dump(entry));
      }
      if (i < n) {
        from_ratios->push_back(*type);
      } else {
        config.mtp_layer_types.push_back(*type);
      }
    }
  }
  if (from_names && from_ratios) {
    for (int64_t i = 0; i < n; ++i) {
      if ((*from_names)[i] != (*from_ratios)[i]) {
        cfg.fail("layer_types[" + std::to_string(i) + "]",
                 "(" + std::string(attention_type_name((*from_names)[i])) + ") contradicts compress_ratios[" +
                     std::to_string(i) + "]");
      }
    }
  }
  if (!from_names && !from_ratios) {
    // transformers would invent a Pro-like default here, which matches no real checkpoint.
    cfg.fail("layer_types", "is missing (give layer_types or compress_ratios: the schedule is never guessed)");
  }
  config.layer_types = from_names ? *from_names : *from_ratios;

  const CompressRates rates = resolve_compress_rates(cfg);
  config.compress_rates.clear();
  for (AttentionType type : config.layer_types) {
    config.compress_rates.push_back(type == AttentionType::kSliding            ? 0
                                    : type == AttentionType::kCompressedSparse ? rates.csa
                                                                               : rates.hca);
  }
  config.csa_compress_rate = rates.csa;
  config.hca_compress_rate = rates.hca;
}

void resolve_mlp_schedule(const FieldReader& cfg, ModelConfig& config) {
  const int64_t n = config.num_layers;
  const auto num_hash = cfg.opt_int("num_hash_layers");
  if (num_hash && (*num_hash < 0 || *num_hash > n)) {
    cfg.fail("num_hash_layers", "must be in [0, num_hidden_layers = " + std::to_string(n) + "], got " +
                                    std::to_string(*num_hash));
  }
  config.mlp_types.clear();
  if (const json* names = cfg.opt_array("mlp_layer_types")) {
    if (static_cast<int64_t>(names->size()) != n) {
      cfg.fail("mlp_layer_types", "has " + std::to_string(names->size()) + " entries but num_hidden_layers is " +
                                      std::to_string(n));
    }
    for (size_t i = 0; i < names->size(); ++i) {
      const json& entry = (*names)[i];
      if (entry == "hash_moe") {
        config.mlp_types.push_back(MlpType::kHashMoe);
      } else if (entry == "moe") {
        config.mlp_types.push_back(MlpType::kMoe);
      } else {
        cfg.fail("mlp_layer_types[" + std::to_string(i) + "]", "must be \"hash_moe\" or \"moe\", got " + short_dump(entry));
      }
    }
    if (num_hash) {
      for (int64_t i = 0; i < n; ++i) {
        const bool expect_hash = i < *num_hash;
        if ((config.mlp_types[i] == MlpType::kHashMoe) != expect_hash) {
          cfg.fail("num_hash_layers", "(" + std::to_string(*num_hash) + ") contradicts mlp_layer_types[" +
                                          std::to_string(i) + "]");
        }
      }
    }
  } else if (num_hash) {
    for (int64_t i = 0; i < n; ++i) config.mlp_types.push_back(i < *num_hash ? MlpType::kHashMoe : MlpType::kMoe);
  } else {
    cfg.fail("mlp_layer_types", "is missing (give mlp_layer_types or num_hash_layers)");
  }
  config.num_hash_layers = 0;
  for (MlpType type : config.mlp_types) config.num_hash_layers += type == MlpType::kHashMoe ? 1 : 0;
}

// d_r from qk_rope_head_dim and/or partial_rotary_factor (top level or inside rope_parameters.*).
void resolve_rope_head_dim(const FieldReader& cfg, ModelConfig& config) {
  std::optional<int64_t> from_factor;
  std::string factor_field;
  auto take_factor = [&](const FieldReader& reader) {
    auto factor = reader.opt_double("partial_rotary_factor");
    if (!factor) return;
    const double dims = *factor * static_cast<double>(config.head_dim);
    // transformers truncates with int(); we insist the product is a whole number of channels.
    if (!(*factor > 0.0 && *factor <= 1.0) || std::fabs(dims - std::round(dims)) > 1e-9) {
      reader.fail("partial_rotary_factor", "(" + num(*factor) + ") times head_dim (" +
                                               std::to_string(config.head_dim) + ") is not a whole channel count");
    }
    const auto value = static_cast<int64_t>(std::llround(dims));
    if (from_factor && *from_factor != value) {
      reader.fail("partial_rotary_factor", "gives " + std::to_string(value) + " rotated channels but " + factor_field +
                                               " gives " + std::to_string(*from_factor));
    }
    from_factor = value;
    factor_field = reader.field_name("partial_rotary_factor");
  };
  take_factor(cfg);
  if (auto params = cfg.opt_object("rope_parameters")) {
    for (const char* label : {"main", "compress"}) {
      if (auto sub = params->opt_object(label)) take_factor(*sub);
    }
  }
  const auto explicit_dim = cfg.opt_int("qk_rope_head_dim");
  if (explicit_dim && from_factor && *explicit_dim != *from_factor) {
    cfg.fail("qk_rope_head_dim", "(" + std::to_string(*explicit_dim) + ") contradicts " + factor_field + " (" +
                                     std::to_string(*from_factor) + " channels)");
  }
  if (!explicit_dim && !from_factor) cfg.fail("qk_rope_head_dim", "is missing (or give partial_rotary_factor)");
  config.rope_head_dim = explicit_dim ? *explicit_dim : *from_factor;
  if (config.rope_head_dim <= 0 || config.rope_head_dim % 2 != 0 || config.rope_head_dim > config.head_dim) {
    cfg.fail(explicit_dim ? "qk_rope_head_dim" : factor_field,
             "gives " + std::to_string(config.rope_head_dim) + " rotated channels; need an even count in (0, head_dim]");
  }
}

// One RoPE table from a dict in HF's rope_parameters form or the legacy rope_scaling form.
// `theta` is the table's base; `scaling` may be null (plain RoPE).
RopeParams read_rope_table(const FieldReader* scaling, double theta, int64_t max_position) {
  RopeParams rope;
  rope.theta = theta;
  if (!scaling) return rope;

  std::string type = "default";
  if (auto t = scaling->opt_string("rope_type")) type = *t;
  if (auto t = scaling->opt_string("type")) {
    if (scaling->has("rope_type") && *t != type) scaling->fail("type", "contradicts rope_type");
    type = *t;
  }
  if (type == "default") return rope;
  if (type != "yarn") scaling->fail("rope_type", "'" + type + "' is not supported (only default and yarn)");
  rope.yarn = true;
  // transformers fills original_max_position_embeddings from max_position_embeddings when absent.
  rope.original_max_position = scaling->opt_int("original_max_position_embeddings").value_or(max_position);
  if (rope.original_max_position <= 0) scaling->fail("original_max_position_embeddings", "must be positive");
  const double implicit = static_cast<double>(max_position) / static_cast<double>(rope.original_max_position);
  const auto factor = scaling->opt_double("factor");
  // transformers 5.17 (_compute_yarn_parameters) uses an explicit factor and derives
  // max_position_embeddings / original_max_position_embeddings only when it is absent; it merely
  // warns when the two differ. We refuse that ambiguity.
  if (factor && scaling->has("original_max_position_embeddings") && std::fabs(*factor - implicit) > 1e-9 * implicit) {
    scaling->fail("factor", "(" + num(*factor) +
                                ") contradicts max_position_embeddings / original_max_position_embeddings (" +
                                num(implicit) + ")");
  }
  rope.factor = factor ? *factor : implicit;
  scaling->check_double_range("factor", rope.factor, 1.0, 1e6);
  scaling->check_int_range("original_max_position_embeddings", rope.original_max_position, 1, int64_t{1} << 24);
  // `x or default` as in transformers: a 0 / null beta means the default.
  const double beta_fast = scaling->opt_double("beta_fast").value_or(0.0);
  const double beta_slow = scaling->opt_double("beta_slow").value_or(0.0);
  rope.beta_fast = beta_fast != 0.0 ? beta_fast : 32.0;
  rope.beta_slow = beta_slow != 0.0 ? beta_slow : 1.0;
  scaling->check_double_range("beta_fast", rope.beta_fast, 0.0, 1e6, /*lo_open=*/true);
  scaling->check_double_range("beta_slow", rope.beta_slow, 0.0, 1e6, /*lo_open=*/true);
  if (auto attention_factor = scaling->opt_double("attention_factor"); attention_factor && *attention_factor != 1.0) {
    scaling->fail("attention_factor", "must be 1.0 (DeepSeek-V4 applies no YaRN amplitude scaling)");
  }
  if (auto truncate = scaling->opt_bool("truncate"); truncate && !*truncate) {
    scaling->fail("truncate", "false is not supported");
  }
  return rope;
}

void check_theta_agrees(const FieldReader& cfg, const std::string& key, double theta) {
  if (auto top = cfg.opt_double(key); top && *top != theta) {
    cfg.fail(key, "(" + num(*top) + ") contradicts rope_parameters (" + num(theta) + ")");
  }
}

void resolve_rope(const FieldReader& cfg, ModelConfig& config) {
  const int64_t max_position = config.max_position_embeddings;
  auto params = cfg.opt_object("rope_parameters");
  std::optional<FieldReader> main_sub, compress_sub;
  if (params) {
    main_sub = params->opt_object("main");
    compress_sub = params->opt_object("compress");
    if (main_sub.has_value() != compress_sub.has_value()) {
      params->fail(main_sub ? "compress" : "main", "is missing (rope_parameters needs both main and compress)");
    }
  }
  if (main_sub) {
    // transformers nested form: each table carries its own theta.
    const double main_theta = main_sub->req_double_in("rope_theta", 0.0, 1e12, true);
    const double compress_theta = compress_sub->req_double_in("rope_theta", 0.0, 1e12, true);
    check_theta_agrees(cfg, "rope_theta", main_theta);
    check_theta_agrees(cfg, "compress_rope_theta", compress_theta);
    config.rope_main = read_rope_table(&*main_sub, main_theta, max_position);
    config.rope_compress = read_rope_table(&*compress_sub, compress_theta, max_position);
    return;
  }
  // Flat form: rope_theta / compress_rope_theta, with the YaRN settings in rope_scaling (upstream) or a
  // flat rope_parameters dict (transformers before nesting). They apply to the compress table only.
  const double main_theta = cfg.req_double_in("rope_theta", 0.0, 1e12, true);
  const double compress_theta = cfg.req_double_in("compress_rope_theta", 0.0, 1e12, true);
  auto scaling = cfg.opt_object("rope_scaling");
  if (params && scaling) cfg.fail("rope_scaling", "and rope_parameters are both given; keep one");
  const FieldReader* yarn_settings = params ? &*params : scaling ? &*scaling : nullptr;
  config.rope_main = read_rope_table(nullptr, main_theta, max_position);
  config.rope_compress = read_rope_table(yarn_settings, compress_theta, max_position);
}

void resolve_quantization(const FieldReader& cfg, ModelConfig& config) {
  QuantizationInfo& quant = config.quantization;
  quant.expert_dtype = cfg.opt_string("expert_dtype").value_or("");
  auto qc = cfg.opt_object("quantization_config");
  if (!qc) return;
  quant.quant_method = qc->opt_string("quant_method").value_or("");
  quant.moe_quant_algo = qc->opt_string("moe_quant_algo").value_or("");
  if (const json* block = qc->opt_array("weight_block_size")) {
    if (block->size() != 2 || !(*block)[0].is_number_integer() || (*block)[0] != (*block)[1] ||
        (*block)[0].get<int64_t>() <= 0) {
      qc->fail("weight_block_size", "must be a square [n, n] block, got " + short_dump(*block));
    }
    quant.weight_block_size = (*block)[0].get<int64_t>();
    qc->check_int_range("weight_block_size", quant.weight_block_size, 1, int64_t{1} << 16);
  }
}

void validate_dimensions(const FieldReader& cfg, const ModelConfig& config) {
  if (config.num_heads % config.o_groups != 0) cfg.fail("o_groups", "must divide num_attention_heads");
  if (config.num_experts_per_tok > config.n_routed_experts) {
    cfg.fail("num_experts_per_tok", "exceeds n_routed_experts");
  }
  if (!(config.hc_eps > 0.0)) cfg.fail("hc_eps", "must be positive");
  if (!(config.rms_norm_eps > 0.0)) cfg.fail("rms_norm_eps", "must be positive");
  if (config.swiglu_limit < 0.0) cfg.fail("swiglu_limit", "must not be negative");
  if (config.scoring_func != "sqrtsoftplus") {
    cfg.fail("scoring_func", "'" + config.scoring_func + "' is not supported (only sqrtsoftplus)");
  }
  // transformers requires model_type (AutoConfig picks the class by it) and reads
  // num_key_value_heads; every DeepSeek-V4 config.json carries both, so neither is defaulted.
  if (cfg.req_int("num_key_value_heads") != 1) {
    cfg.fail("num_key_value_heads", "must be 1 (DeepSeek-V4 shares one K=V head)");
  }
  if (auto act = cfg.opt_string("hidden_act"); act && *act != "silu") cfg.fail("hidden_act", "must be silu");
  if (const std::string model_type = cfg.req_string("model_type"); model_type != "deepseek_v4") {
    cfg.fail("model_type", "is '" + quote_for_message(model_type, 40) + "', expected deepseek_v4");
  }
  if (config.bos_token_id < -1 || config.bos_token_id >= config.vocab_size) {
    cfg.fail("bos_token_id", "is outside the vocabulary");
  }
  if (config.eos_token_id < -1 || config.eos_token_id >= config.vocab_size) {
    cfg.fail("eos_token_id", "is outside the vocabulary");
  }
}

// bos/eos may be an int, a list of ints (first one used) or null (-1).
int64_t read_token_id(const FieldReader& cfg, const std::string& key, int64_t fallback) {
  if (!cfg.has(key)) return cfg.is_null(key) ? -1 : fallback;
  const json& value = cfg.raw(key);
  if (value.is_array()) {
    if (value.empty() || !value[0].is_number_integer()) cfg.fail(key, "must be an integer or a list of integers");
    return value[0].get<int64_t>();
  }
  return cfg.req_int(key);
}

}  // namespace

std::string_view attention_type_name(AttentionType type) {
  switch (type) {
    case AttentionType::kSliding: return kSliding;
    case AttentionType::kCompressedSparse: return kCsa;
    case AttentionType::kHeavilyCompressed: return kHca;
  }
  return "unknown";
}

std::string_view mlp_type_name(MlpType type) { return type == MlpType::kHashMoe ? "hash_moe" : "moe"; }

ModelConfig parse_model_config(const nlohmann::json& json_config, const std::string& source) {
  MEGAMOE_CHECK(json_config.is_object(), source, ": expected a JSON object at the top level");
  const FieldReader cfg(json_config, source);
  ModelConfig config;
  // Every field that drives compute or memory has a range (generous around V4-Flash/Pro:
  // a config outside it is corrupt or hostile, not a bigger model).
  constexpr int64_t k64K = int64_t{1} << 16, k1M = int64_t{1} << 20, k16M = int64_t{1} << 24;
  config.vocab_size = cfg.req_int_in("vocab_size", 1, k16M);
  config.hidden_size = cfg.req_int_in("hidden_size", 1, k64K);
  config.num_layers = cfg.req_int_in("num_hidden_layers", 1, 1024);
  config.num_heads = cfg.req_int_in("num_attention_heads", 1, 1024);
  config.head_dim = cfg.req_int_in("head_dim", 1, 8192);
  config.q_lora_rank = cfg.req_int_in("q_lora_rank", 1, k64K);
  config.o_groups = cfg.req_int_in("o_groups", 1, config.num_heads);
  config.o_lora_rank = cfg.req_int_in("o_lora_rank", 1, k64K);
  config.sliding_window = cfg.req_int_in("sliding_window", 1, k1M);
  config.index_n_heads = cfg.req_int_in("index_n_heads", 1, 1024);
  config.index_head_dim = cfg.req_int_in("index_head_dim", 1, 8192);
  config.index_topk = cfg.req_int_in("index_topk", 1, k1M);
  config.n_routed_experts = cfg.req_int_in("n_routed_experts", 1, k64K);
  config.n_shared_experts = cfg.req_int_in("n_shared_experts", 0, 64);
  config.num_experts_per_tok = cfg.req_int_in("num_experts_per_tok", 1, config.n_routed_experts);
  config.moe_intermediate_size = cfg.req_int_in("moe_intermediate_size", 1, k1M);
  config.routed_scaling_factor = cfg.req_double_in("routed_scaling_factor", 0.0, 1e6, /*lo_open=*/true);
  config.swiglu_limit = cfg.req_double_in("swiglu_limit", 0.0, 1e9);
  config.scoring_func = cfg.req_string("scoring_func");
  config.hc_mult = cfg.req_int_in("hc_mult", 1, 64);
  config.hc_sinkhorn_iters = cfg.req_int_in("hc_sinkhorn_iters", 1, 1000);
  config.hc_eps = cfg.req_double_in("hc_eps", 0.0, 1.0, /*lo_open=*/true);
  config.rms_norm_eps = cfg.req_double_in("rms_norm_eps", 0.0, 1.0, /*lo_open=*/true);
  config.max_position_embeddings = cfg.req_int_in("max_position_embeddings", 1, k16M);
  config.num_nextn_predict_layers = cfg.opt_int("num_nextn_predict_layers").value_or(0);
  cfg.check_int_range("num_nextn_predict_layers", config.num_nextn_predict_layers, 0, 64);
  config.bos_token_id = read_token_id(cfg, "bos_token_id", 0);
  config.eos_token_id = read_token_id(cfg, "eos_token_id", 1);
  config.tie_word_embeddings = cfg.opt_bool("tie_word_embeddings").value_or(false);
  validate_dimensions(cfg, config);

  resolve_attention_schedule(cfg, config);
  resolve_mlp_schedule(cfg, config);
  resolve_rope_head_dim(cfg, config);
  resolve_rope(cfg, config);
  resolve_quantization(cfg, config);
  return config;
}

ModelConfig load_model_config(const std::filesystem::path& config_json) {
  return parse_model_config(read_json_file(config_json, kMaxConfigBytes), config_json.string());
}

}  // namespace megamoe
