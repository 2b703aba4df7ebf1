"""The CLI's configuration: a JSON file under the user's config directory, then environment
variables, then command-line options (each overrides the one before).

File: `$ORCHARD_CONFIG`, else `$XDG_CONFIG_HOME/orchard/config.json`, else
`~/.config/orchard/config.json` (`%APPDATA%\\orchard\\config.json` on Windows), written with mode
0600 because it holds the refresh token. Environment: `ORCHARD_URL`, `ORCHARD_USERNAME`,
`ORCHARD_PASSWORD`, `ORCHARD_TOKEN` (an access token), `ORCHARD_PROJECT`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = {
    "url": "ORCHARD_URL",
    "username": "ORCHARD_USERNAME",
    "password": "ORCHARD_PASSWORD",
    "access": "ORCHARD_TOKEN",
    "project": "ORCHARD_PROJECT",
}
DEFAULT_URL = "http://127.0.0.1:8000"
_MAX_BYTES = 1024 * 1024


def config_path() -> Path:
    if os.environ.get("ORCHARD_CONFIG"):
        return Path(os.environ["ORCHARD_CONFIG"])
    if os.name == "nt" and os.environ.get("APPDATA"):
        return Path(os.environ["APPDATA"]) / "orchard" / "config.json"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "orchard" / "config.json"


def load_file() -> dict[str, Any]:
    path = config_path()
    try:
        if path.stat().st_size > _MAX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_file(values: dict[str, Any]) -> Path:
    """Merge `values` into the file (None removes a key); written atomically, mode 0600."""
    path = config_path()
    data = load_file()
    for key, value in values.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def resolve(**overrides: Any) -> dict[str, Any]:
    """File, then environment, then the given (non-None) overrides."""
    values = {
        k: v
        for k, v in load_file().items()
        if k in ("url", "username", "project", "access", "refresh")
    }
    for key, var in ENV.items():
        if os.environ.get(var):
            values[key] = os.environ[var]
            if key == "access":
                values.pop("refresh", None)  # a given access token stands alone
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("url", DEFAULT_URL)
    return values
