"""Writes the config.json fixtures of tests/core/test_model_config.cpp.

Upstream-form configs (*-upstream.json) are written from the values of
dsv4-architecture.md §2.1 / §12 (the released config.json layout); the
transformers-form configs (*-transformers.json) are what transformers 5.17's
DeepseekV4Config makes of them (to_json_string), so the C++ parser is checked
against the official tool's own output. Run with a Python that has transformers 5.17 (tools/README.md).
"""
import json
import pathlib

from transformers import DeepseekV4Config

HERE = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "configs"

COMMON = dict(
    model_type="deepseek_v4", architectures=["DeepseekV4ForCausalLM"], num_key_value_heads=1, head_dim=512,
    qk_rope_head_dim=64, o_lora_rank=1024, sliding_window=128, index_n_heads=64, index_head_dim=128, hc_mult=4,
    hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6, num_hash_layers=3, n_shared_experts=1,
    num_experts_per_tok=6, scoring_func="sqrtsoftplus", topk_method="noaux_tc", norm_topk_prob=True,
    swiglu_limit=10.0, hidden_act="silu", rope_theta=10000, compress_rope_theta=160000,
    rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536, "beta_fast": 32,
                  "beta_slow": 1},
    max_position_embeddings=1048576, num_nextn_predict_layers=1, tie_word_embeddings=False, bos_token_id=0,
    eos_token_id=1, vocab_size=129280,
    quantization_config={"quant_method": "fp8", "fmt": "e4m3", "scale_fmt": "ue8m0",
                         "weight_block_size": [128, 128], "activation_scheme": "dynamic"},
    expert_dtype="fp4",
)


def schedule(layers, first_two):
    body = [4 if i % 2 == 0 else 128 for i in range(2, layers)]
    return [first_two, first_two] + body + [0]  # trailing MTP slot


FLASH = dict(COMMON, hidden_size=4096, num_hidden_layers=43, num_attention_heads=64, q_lora_rank=1024, o_groups=8,
             n_routed_experts=256, moe_intermediate_size=2048, routed_scaling_factor=1.5, index_topk=512,
             compress_ratios=schedule(43, 0))
PRO = dict(COMMON, hidden_size=7168, num_hidden_layers=61, num_attention_heads=128, q_lora_rank=1536, o_groups=16,
           n_routed_experts=384, moe_intermediate_size=3072, routed_scaling_factor=2.5, index_topk=1024,
           compress_ratios=schedule(61, 128))
TINY = dict(
    vocab_size=128, hidden_size=64, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=1, head_dim=32,
    q_lora_rank=32, o_groups=2, o_lora_rank=16, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
    moe_intermediate_size=32, routed_scaling_factor=1.5, scoring_func="sqrtsoftplus", swiglu_limit=10.0,
    sliding_window=8, index_n_heads=8, index_head_dim=16, index_topk=3, hc_mult=4, hc_sinkhorn_iters=20,
    hc_eps=1e-6, rms_norm_eps=1e-6, rope_theta=10000.0, compress_rope_theta=160000.0,
    rope_scaling={"type": "yarn", "factor": 16.0, "original_max_position_embeddings": 65536, "beta_fast": 32,
                  "beta_slow": 1},
    max_position_embeddings=1048576, num_nextn_predict_layers=0, tie_word_embeddings=False, model_type="deepseek_v4",
)
TINY_UPSTREAM = dict(TINY, compress_ratios=[0, 4, 128, 4, 128], compress_rate_hca=8, num_hash_layers=2,
                     qk_rope_head_dim=8)
TINY_TRANSFORMERS_ARGS = dict(
    TINY, partial_rotary_factor=0.25,
    layer_types=["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention",
                 "compressed_sparse_attention", "heavily_compressed_attention"],
    mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe", "moe"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8})


def hf_json(kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k != "model_type"}
    return json.loads(DeepseekV4Config(**kwargs).to_json_string(use_diff=False))


def write(name, obj):
    (HERE / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


write("flash-upstream.json", FLASH)
write("pro-upstream.json", PRO)
write("tiny-upstream.json", TINY_UPSTREAM)
write("flash-transformers.json", hf_json(FLASH))
write("pro-transformers.json", hf_json(PRO))
write("tiny-transformers.json", hf_json(TINY_TRANSFORMERS_ARGS))
# The two tiny forms must mean the same thing to transformers itself.
a, b = hf_json(TINY_UPSTREAM), hf_json(TINY_TRANSFORMERS_ARGS)
for key in ("layer_types", "mlp_layer_types", "compress_rates", "rope_parameters", "qk_rope_head_dim"):
    assert a[key] == b[key], (key, a[key], b[key])

# The transformers state_dict of the §12 model (names and shapes): the oracle for the key renaming test.
import torch  # noqa: E402
from transformers import DeepseekV4ForCausalLM  # noqa: E402

with torch.device("meta"):
    model = DeepseekV4ForCausalLM(DeepseekV4Config(**TINY_TRANSFORMERS_ARGS))
state = {name: list(t.shape) for name, t in model.state_dict().items()}
write("tiny-transformers-state-dict.json", state)

# What transformers' save_pretrained writes for that model: a hybrid of upstream names under `model.`
# (it reverses its renaming on save and unstacks the experts). The oracle for loading such files.
import tempfile  # noqa: E402

from safetensors import safe_open  # noqa: E402

torch.manual_seed(0)
with tempfile.TemporaryDirectory() as tmp:
    DeepseekV4ForCausalLM(DeepseekV4Config(**TINY_TRANSFORMERS_ARGS)).save_pretrained(tmp)
    with safe_open(f"{tmp}/model.safetensors", "pt") as f:
        saved = {k: f.get_slice(k).get_shape() for k in sorted(f.keys())}
write("tiny-transformers-saved-keys.json", saved)
