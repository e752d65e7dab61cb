"""Entry point of the PyInstaller bundle: ``llama-orch ...`` without a Python install.

The engine host starts llama-cpp-python's server as ``sys.executable -m
llama_cpp.server ...``; inside the bundle ``sys.executable`` is this program,
so ``-m MODULE`` runs that bundled module the way ``python -m`` would.
"""

from __future__ import annotations

import runpy
import sys


def main() -> int:
    """Run ``-m MODULE ARGS`` like Python would, else the llama-orch command line."""
    if len(sys.argv) >= 3 and sys.argv[1] == "-m":
        module = sys.argv[2]
        sys.argv = [module, *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    from app.main import main as llama_orch

    return llama_orch()


if __name__ == "__main__":
    raise SystemExit(main())
