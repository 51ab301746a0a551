"""Secrets for the store clients, read where a client is made: never held by a connection config, which
travels with the pipeline graph, nor passed on argv."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["read_secret"]


def read_secret(path: str | None, env_name: str) -> str | None:
    """A secret from a file (a mounted Kubernetes Secret; a final line break is no part of it), else from
    the environment variable `env_name`, else None."""
    if path:
        return Path(path).read_text("utf-8").rstrip("\r\n")
    return os.environ.get(env_name) or None
