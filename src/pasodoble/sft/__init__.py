"""Cold start: teacher-built SFT data (``build_data``, ``teacher``) and role fine-tuning (``train``).

``pasodoble sft build-data`` asks a teacher (a local model or an OpenAI-compatible chat-completions
endpoint) for Proposer and Solver examples in the RL prompts' format, keeps those an independent check
agrees with, and writes chat-format JSONL plus a data card; ``pasodoble sft train`` fine-tunes a base
model on one role's file with the loss on assistant tokens only. See docs/cold-start.md.
"""
