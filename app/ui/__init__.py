"""The desktop window: pools per GPU, chat with live streams, decisions, metrics, tray.

Everything here reaches the backend through the ``app.ui.bridge.Bridge`` protocol
and runs on the Qt thread (qasync); the backend has its own thread and loop.
"""
