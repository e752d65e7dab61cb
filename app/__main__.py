"""``python -m app`` runs the ``llama-orch`` command line."""

from app.main import main

raise SystemExit(main())
