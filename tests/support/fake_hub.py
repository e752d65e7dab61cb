"""The fake Hugging Face hub of the tests (see app.local_hub)."""

from app.local_hub import COMMIT, FakeHub

__all__ = ["COMMIT", "FakeHub"]
