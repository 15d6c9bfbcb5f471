"""nose: remove the self-attention sublayers of decoder LLMs that matter least (NOSE)."""

__version__ = "0.1.0"
