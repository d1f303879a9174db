"""Driving side: the Litestar app, the CLI and the dishka providers (the composition root)."""
