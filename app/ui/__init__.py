"""The desktop window: pools per GPU, chat with live streams, decisions, metrics, tray.

Everything here reaches the core through ``app.ui.bridge.OrchestratorBridge``
and runs on the one qasync loop shared with the embedded API server.
"""
