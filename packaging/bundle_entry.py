"""Entry point of the PyInstaller bundle: ``llama-orch ...`` without a Python install."""

from __future__ import annotations

from app.main import main

if __name__ == "__main__":
    raise SystemExit(main())
