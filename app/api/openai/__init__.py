"""The OpenAI-compatible routes: wire models, errors, streaming and handlers."""
