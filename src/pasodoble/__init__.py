"""PasoDoble: dual-play reinforcement learning of LLMs (Proposer vs Solver, both trained with GRPO)."""

__version__ = "0.1.0"
