"""Fakes shared by tests: a vLLM-engine stand-in and an OpenAI-compatible chat server."""
