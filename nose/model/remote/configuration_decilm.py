"""DeciLM ("nemotron-nas") config for checkpoints written by nose: llama fields + block_configs.

Shipped inside every exported checkpoint so ``AutoConfig.from_pretrained(dir,
trust_remote_code=True)`` works without nose installed.
"""

from transformers import LlamaConfig


class DeciLMConfig(LlamaConfig):
    model_type = "nemotron-nas"

    def __init__(self, block_configs=None, **kwargs):
        self.block_configs = block_configs or []
        super().__init__(**kwargs)
