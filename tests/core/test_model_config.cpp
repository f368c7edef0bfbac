// config.json parsing. Fixtures in tests/data/configs: *-upstream.json are the
// released layout with the values of dsv4-architecture.md §2.1 / §12;
// *-transformers.json are transformers 5.17's own re-serialisation of them
// (tools/make_config_fixtures.py). Expected values below come from the spec tables, not
// from our parser.
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/model_config.hpp"

namespace megamoe {
namespace {

const std::filesystem::path kConfigs = std::filesystem::path(MEGAMOE_TEST_DATA_DIR) / "configs";

nlohmann::json read_json(const std::string& name) {
  std::ifstream in(kConfigs / name);
  EXPECT_TRUE(in) << name;
  return nlohmann::json::parse(in);
}

ModelConfig load(const std::string& name) { return load_model_config(kConfigs / name); }

// Expects parse_model_config to fail with a message naming the source and containing `needle`.
void expect_error(const nlohmann::json& json, const std::string& needle) {
  try {
    parse_model_config(json, "cfg.json");
    ADD_FAILURE() << "no error; expected one mentioning: " << needle;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cfg.json: "), std::string::npos) << message;
    EXPECT_NE(message.find(needle), std::string::npos) << "message: " << message << "\nexpected: " << needle;
  }
}

void expect_same(const ModelConfig& a, const ModelConfig& b) {
#define MEGAMOE_EXPECT_FIELD(f) EXPECT_EQ(a.f, b.f) << #f
  MEGAMOE_EXPECT_FIELD(vocab_size);
  MEGAMOE_EXPECT_FIELD(hidden_size);
  MEGAMOE_EXPECT_FIELD(num_layers);
  MEGAMOE_EXPECT_FIELD(num_heads);
  MEGAMOE_EXPECT_FIELD(head_dim);
  MEGAMOE_EXPECT_FIELD(rope_head_dim);
  MEGAMOE_EXPECT_FIELD(q_lora_rank);
  MEGAMOE_EXPECT_FIELD(o_groups);
  MEGAMOE_EXPECT_FIELD(o_lora_rank);
  MEGAMOE_EXPECT_FIELD(sliding_window);
  MEGAMOE_EXPECT_FIELD(index_n_heads);
  MEGAMOE_EXPECT_FIELD(index_head_dim);
  MEGAMOE_EXPECT_FIELD(index_topk);
  MEGAMOE_EXPECT_FIELD(n_routed_experts);
  MEGAMOE_EXPECT_FIELD(n_shared_experts);
  MEGAMOE_EXPECT_FIELD(num_experts_per_tok);
  MEGAMOE_EXPECT_FIELD(moe_intermediate_size);
  MEGAMOE_EXPECT_FIELD(routed_scaling_factor);
  MEGAMOE_EXPECT_FIELD(swiglu_limit);
  MEGAMOE_EXPECT_FIELD(scoring_func);
  MEGAMOE_EXPECT_FIELD(hc_mult);
  MEGAMOE_EXPECT_FIELD(hc_sinkhorn_iters);
  MEGAMOE_EXPECT_FIELD(hc_eps);
  MEGAMOE_EXPECT_FIELD(rms_norm_eps);
  MEGAMOE_EXPECT_FIELD(max_position_embeddings);
  MEGAMOE_EXPECT_FIELD(num_nextn_predict_layers);
  MEGAMOE_EXPECT_FIELD(bos_token_id);
  MEGAMOE_EXPECT_FIELD(eos_token_id);
  MEGAMOE_EXPECT_FIELD(tie_word_embeddings);
  MEGAMOE_EXPECT_FIELD(layer_types);
  MEGAMOE_EXPECT_FIELD(compress_rates);
  MEGAMOE_EXPECT_FIELD(mlp_types);
  MEGAMOE_EXPECT_FIELD(num_hash_layers);
  MEGAMOE_EXPECT_FIELD(csa_compress_rate);
  MEGAMOE_EXPECT_FIELD(hca_compress_rate);
  for (const auto* pair : {&a.rope_main, &a.rope_compress}) {
    const RopeParams& other = pair == &a.rope_main ? b.rope_main : b.rope_compress;
    EXPECT_EQ(pair->theta, other.theta);
    EXPECT_EQ(pair->yarn, other.yarn);
    EXPECT_EQ(pair->factor, other.factor);
    EXPECT_EQ(pair->original_max_position, other.original_max_position);
    EXPECT_EQ(pair->beta_fast, other.beta_fast);
    EXPECT_EQ(pair->beta_slow, other.beta_slow);
  }
  MEGAMOE_EXPECT_FIELD(quantization.quant_method);
  MEGAMOE_EXPECT_FIELD(quantization.moe_quant_algo);
  MEGAMOE_EXPECT_FIELD(quantization.expert_dtype);
  MEGAMOE_EXPECT_FIELD(quantization.weight_block_size);
#undef MEGAMOE_EXPECT_FIELD
}

void expect_common_real_values(const ModelConfig& c) {
  EXPECT_EQ(c.head_dim, 512);
  EXPECT_EQ(c.rope_head_dim, 64);
  EXPECT_EQ(c.nope_head_dim(), 448);
  EXPECT_EQ(c.o_lora_rank, 1024);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.index_n_heads, 64);
  EXPECT_EQ(c.index_head_dim, 128);
  EXPECT_EQ(c.hc_mult, 4);
  EXPECT_EQ(c.hc_sinkhorn_iters, 20);
  EXPECT_DOUBLE_EQ(c.hc_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.num_hash_layers, 3);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.scoring_func, "sqrtsoftplus");
  EXPECT_DOUBLE_EQ(c.swiglu_limit, 10.0);
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.max_position_embeddings, 1048576);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_id, 1);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_main.theta, 10000.0);
  EXPECT_FALSE(c.rope_main.yarn);
  EXPECT_DOUBLE_EQ(c.rope_compress.theta, 160000.0);
  EXPECT_TRUE(c.rope_compress.yarn);
  EXPECT_DOUBLE_EQ(c.rope_compress.factor, 16.0);
  EXPECT_EQ(c.rope_compress.original_max_position, 65536);
  EXPECT_DOUBLE_EQ(c.rope_compress.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_compress.beta_slow, 1.0);
  EXPECT_EQ(c.quantization.quant_method, "fp8");
  EXPECT_EQ(c.quantization.weight_block_size, 128);
  EXPECT_EQ(c.quantization.expert_dtype, "fp4");
  EXPECT_EQ(c.quantization.moe_quant_algo, "");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    EXPECT_EQ(c.mlp_types[l], l < 3 ? MlpType::kHashMoe : MlpType::kMoe) << l;
  }
}

int64_t count(const ModelConfig& c, AttentionType type) {
  return std::count(c.layer_types.begin(), c.layer_types.end(), type);
}

// §2.2: Flash layers 0-1 SWA, then even -> CSA (rate 4), odd -> HCA (rate 128).
void expect_flash(const ModelConfig& c) {
  expect_common_real_values(c);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.num_layers, 43);
  EXPECT_EQ(c.num_heads, 64);
  EXPECT_EQ(c.q_lora_rank, 1024);
  EXPECT_EQ(c.o_groups, 8);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 1.5);
  EXPECT_EQ(c.index_topk, 512);
  ASSERT_EQ(c.layer_types.size(), 43u);
  ASSERT_EQ(c.compress_rates.size(), 43u);
  ASSERT_EQ(c.mlp_types.size(), 43u);
  for (int64_t l = 0; l < 43; ++l) {
    const AttentionType expected = l < 2 ? AttentionType::kSliding
                                   : l % 2 == 0 ? AttentionType::kCompressedSparse
                                                : AttentionType::kHeavilyCompressed;
    EXPECT_EQ(c.layer_types[l], expected) << "layer " << l;
    EXPECT_EQ(c.compress_rates[l], l < 2 ? 0 : l % 2 == 0 ? 4 : 128) << "layer " << l;
  }
  EXPECT_EQ(count(c, AttentionType::kSliding), 2);
  EXPECT_EQ(count(c, AttentionType::kCompressedSparse), 21);
  EXPECT_EQ(count(c, AttentionType::kHeavilyCompressed), 20);
}

// §2.2: Pro layers 0-1 HCA, then even -> CSA, odd -> HCA.
void expect_pro(const ModelConfig& c) {
  expect_common_real_values(c);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.num_layers, 61);
  EXPECT_EQ(c.num_heads, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.o_groups, 16);
  EXPECT_EQ(c.n_routed_experts, 384);
  EXPECT_EQ(c.moe_intermediate_size, 3072);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.index_topk, 1024);
  ASSERT_EQ(c.layer_types.size(), 61u);
  for (int64_t l = 0; l < 61; ++l) {
    const bool csa = l >= 2 && l % 2 == 0;
    EXPECT_EQ(c.layer_types[l], csa ? AttentionType::kCompressedSparse : AttentionType::kHeavilyCompressed) << l;
    EXPECT_EQ(c.compress_rates[l], csa ? 4 : 128) << l;
  }
  EXPECT_EQ(count(c, AttentionType::kSliding), 0);
  EXPECT_EQ(count(c, AttentionType::kCompressedSparse), 30);
  EXPECT_EQ(count(c, AttentionType::kHeavilyCompressed), 31);
}

TEST(ModelConfig, FlashUpstreamForm) {
  const ModelConfig c = load("flash-upstream.json");
  expect_flash(c);
  // The 44th compress_ratios entry is the MTP block's (SWA).
  EXPECT_EQ(c.mtp_layer_types, std::vector<AttentionType>{AttentionType::kSliding});
}

TEST(ModelConfig, FlashTransformersForm) {
  const ModelConfig c = load("flash-transformers.json");
  expect_flash(c);
  EXPECT_TRUE(c.mtp_layer_types.empty());
  expect_same(c, load("flash-upstream.json"));
}

TEST(ModelConfig, ProBothForms) {
  const ModelConfig upstream = load("pro-upstream.json");
  expect_pro(upstream);
  EXPECT_EQ(upstream.mtp_layer_types, std::vector<AttentionType>{AttentionType::kSliding});
  const ModelConfig transformers = load("pro-transformers.json");
  expect_pro(transformers);
  expect_same(transformers, upstream);
}

// §12: both spellings of the tiny config resolve to the same struct, with the values the spec states.
TEST(ModelConfig, TinyBothFormsResolveIdentically) {
  const ModelConfig upstream = load("tiny-upstream.json");
  const ModelConfig transformers = load("tiny-transformers.json");
  expect_same(upstream, transformers);
  const ModelConfig& c = transformers;
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.rope_head_dim, 8);
  EXPECT_EQ(c.layer_types, (std::vector<AttentionType>{AttentionType::kSliding, AttentionType::kCompressedSparse,
                                                        AttentionType::kHeavilyCompressed,
                                                        AttentionType::kCompressedSparse,
                                                        AttentionType::kHeavilyCompressed}));
  EXPECT_EQ(c.compress_rates, (std::vector<int64_t>{0, 4, 8, 4, 8}));
  EXPECT_EQ(c.mlp_types, (std::vector<MlpType>{MlpType::kHashMoe, MlpType::kHashMoe, MlpType::kMoe, MlpType::kMoe,
                                                MlpType::kMoe}));
  EXPECT_EQ(c.num_hash_layers, 2);
  EXPECT_EQ(c.index_topk, 3);
  EXPECT_EQ(c.num_nextn_predict_layers, 0);
  EXPECT_DOUBLE_EQ(c.rope_compress.factor, 16.0);
  EXPECT_TRUE(c.quantization.quant_method.empty());
}

TEST(ModelConfig, TypeNames) {
  EXPECT_EQ(attention_type_name(AttentionType::kSliding), "sliding_attention");
  EXPECT_EQ(attention_type_name(AttentionType::kCompressedSparse), "compressed_sparse_attention");
  EXPECT_EQ(attention_type_name(AttentionType::kHeavilyCompressed), "heavily_compressed_attention");
  EXPECT_EQ(mlp_type_name(MlpType::kHashMoe), "hash_moe");
  EXPECT_EQ(mlp_type_name(MlpType::kMoe), "moe");
}

// §12's second validated variant: factor derived from max_position / original when `factor` is absent.
TEST(ModelConfig, YarnFactorDerivedWhenAbsent) {
  nlohmann::json j = read_json("tiny-upstream.json");
  j["max_position_embeddings"] = 128;
  j["rope_scaling"] = {{"type", "yarn"}, {"original_max_position_embeddings", 32}, {"beta_fast", 32}, {"beta_slow", 1}};
  const ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_DOUBLE_EQ(c.rope_compress.factor, 4.0);
  EXPECT_EQ(c.rope_compress.original_max_position, 32);
  j["rope_scaling"]["factor"] = 4;  // consistent explicit factor is fine
  EXPECT_DOUBLE_EQ(parse_model_config(j, "cfg.json").rope_compress.factor, 4.0);
}

TEST(ModelConfig, LegacyScalarRatesAndShortRatioList) {
  nlohmann::json j = read_json("tiny-upstream.json");
  j["compress_rate_csa"] = 2;
  const ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_EQ(c.compress_rates, (std::vector<int64_t>{0, 2, 8, 2, 8}));
  EXPECT_TRUE(c.mtp_layer_types.empty());
}

TEST(ModelConfig, PlainRopeWithoutScaling) {
  nlohmann::json j = read_json("tiny-upstream.json");
  j.erase("rope_scaling");
  const ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_FALSE(c.rope_compress.yarn);
  EXPECT_DOUBLE_EQ(c.rope_compress.theta, 160000.0);
}

TEST(ModelConfig, EosList) {
  nlohmann::json j = read_json("tiny-upstream.json");
  j["eos_token_id"] = {7, 9};
  j["bos_token_id"] = nullptr;
  const ModelConfig c = parse_model_config(j, "cfg.json");
  EXPECT_EQ(c.eos_token_id, 7);
  EXPECT_EQ(c.bos_token_id, -1);
}

TEST(ModelConfigErrors, MissingAndMistypedFields) {
  const nlohmann::json base = read_json("tiny-upstream.json");
  auto without = [&](const char* key) {
    nlohmann::json j = base;
    j.erase(key);
    return j;
  };
  expect_error(without("hidden_size"), "field 'hidden_size' is missing");
  expect_error(without("swiglu_limit"), "field 'swiglu_limit' is missing");
  expect_error(without("rope_theta"), "field 'rope_theta' is missing");
  expect_error(without("compress_rope_theta"), "field 'compress_rope_theta' is missing");
  expect_error(without("qk_rope_head_dim"), "field 'qk_rope_head_dim' is missing");
  expect_error(without("compress_ratios"), "field 'layer_types' is missing");
  expect_error(without("num_hash_layers"), "field 'mlp_layer_types' is missing");
  nlohmann::json j = base;
  j["hidden_size"] = "64";
  expect_error(j, "field 'hidden_size' must be an integer");
  j = base;
  j["num_attention_heads"] = 0;
  expect_error(j, "field 'num_attention_heads' is 0, outside the allowed range [1, 1024]");
  j = base;
  j["routed_scaling_factor"] = "big";
  expect_error(j, "field 'routed_scaling_factor' must be a number");
  j = base;
  j["o_groups"] = 3;
  expect_error(j, "field 'o_groups' must divide num_attention_heads");
  j = base;
  j["scoring_func"] = "softmax";
  expect_error(j, "field 'scoring_func'");
  j = base;
  j["num_key_value_heads"] = 2;
  expect_error(j, "field 'num_key_value_heads'");
  j = base;
  j["model_type"] = "deepseek_v3";
  expect_error(j, "field 'model_type'");
  expect_error(nlohmann::json::array(), "expected a JSON object");
}

TEST(ModelConfigErrors, InconsistentSchedule) {
  const nlohmann::json upstream = read_json("tiny-upstream.json");
  const nlohmann::json transformers = read_json("tiny-transformers.json");
  nlohmann::json j = upstream;
  j["compress_ratios"] = {0, 4, 5, 4, 128};
  expect_error(j, "field 'compress_ratios[2]' must be 0 (sliding), 4 (CSA) or 128");
  j = upstream;
  j["compress_ratios"] = {0, 4, 128, 4};
  expect_error(j, "field 'compress_ratios' has 4 entries");
  j = upstream;
  j["compress_ratios"] = {0, 4, 128, 4, 128, 0};  // an MTP slot but num_nextn_predict_layers = 0
  expect_error(j, "field 'compress_ratios' has 6 entries");
  j = transformers;
  j["layer_types"].erase(4);
  expect_error(j, "field 'layer_types' has 4 entries but num_hidden_layers is 5");
  j = transformers;
  j["layer_types"][1] = "full_attention";
  expect_error(j, "field 'layer_types[1]' must be one of");
  j = transformers;
  j["compress_ratios"] = {0, 4, 128, 128, 128};
  expect_error(j, "field 'layer_types[3]' (compressed_sparse_attention) contradicts compress_ratios[3]");
  j = transformers;
  j["num_hash_layers"] = 3;
  expect_error(j, "field 'num_hash_layers' (3) contradicts mlp_layer_types[2]");
  j = transformers;
  j["mlp_layer_types"][0] = "dense";
  expect_error(j, "field 'mlp_layer_types[0]' must be");
  j = transformers;
  j["mlp_layer_types"].erase(0);
  expect_error(j, "field 'mlp_layer_types' has 4 entries");
  j = upstream;
  j["num_hash_layers"] = 6;
  expect_error(j, "field 'num_hash_layers' must be in [0, num_hidden_layers = 5]");
  j = transformers;
  j["compress_rate_hca"] = 16;
  expect_error(j, "field 'compress_rate_hca' (16) contradicts compress_rates (8)");
  j = transformers;
  j["compress_rates"]["sliding_attention"] = 1;
  expect_error(j, "field 'compress_rates.sliding_attention' is not an attention type");
}

TEST(ModelConfigErrors, InconsistentRope) {
  const nlohmann::json upstream = read_json("tiny-upstream.json");
  const nlohmann::json transformers = read_json("tiny-transformers.json");
  nlohmann::json j = transformers;
  j["qk_rope_head_dim"] = 16;
  expect_error(j, "field 'qk_rope_head_dim' (16) contradicts");
  j = upstream;
  j["partial_rotary_factor"] = 0.5;
  expect_error(j, "field 'qk_rope_head_dim' (8) contradicts partial_rotary_factor");
  j = upstream;
  j["qk_rope_head_dim"] = 7;
  expect_error(j, "field 'qk_rope_head_dim' gives 7 rotated channels");
  j = upstream;
  j.erase("qk_rope_head_dim");
  j["partial_rotary_factor"] = 0.3;  // 9.6 channels
  expect_error(j, "field 'partial_rotary_factor' (0.3) times head_dim (32) is not a whole channel count");
  j = upstream;
  j["rope_scaling"]["factor"] = 4.0;  // 1048576 / 65536 = 16
  expect_error(j, "field 'rope_scaling.factor' (4) contradicts max_position_embeddings");
  j = upstream;
  j["rope_scaling"]["type"] = "longrope";
  expect_error(j, "field 'rope_scaling.rope_type' 'longrope' is not supported");
  j = transformers;
  j["rope_parameters"]["compress"]["attention_factor"] = 1.277;
  expect_error(j, "field 'rope_parameters.compress.attention_factor' must be 1.0");
  j = transformers;
  j["rope_theta"] = 5000.0;
  expect_error(j, "field 'rope_theta' (5000) contradicts rope_parameters");
  j = transformers;
  j["rope_parameters"].erase("main");
  expect_error(j, "field 'rope_parameters.main' is missing");
  j = transformers;
  j["rope_parameters"]["compress"].erase("rope_theta");
  expect_error(j, "field 'rope_parameters.compress.rope_theta' is missing");
  j = upstream;
  j["rope_parameters"] = j["rope_scaling"];
  expect_error(j, "field 'rope_scaling' and rope_parameters are both given");
}

TEST(ModelConfigErrors, FileErrorsNameTheFile) {
  const auto dir = std::filesystem::temp_directory_path() / "megamoe_test_model_config";
  std::filesystem::create_directories(dir);
  const auto broken = dir / "config.json";
  std::ofstream(broken) << "{\"hidden_size\": 64,";
  try {
    load_model_config(broken);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(broken.string() + ": not valid JSON"), std::string::npos) << e.what();
  }
  try {
    load_model_config(dir / "absent.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("absent.json: cannot open"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace megamoe
