"""Admin pages of the mlbackend app: each half registers its own in `<half>/admin.py`."""

from importlib import import_module
from importlib import util as _util

for _half in ("labelstudio", "labelprop"):
    if _util.find_spec(f"apps.mlbackend.{_half}") is not None:
        if _util.find_spec(f"apps.mlbackend.{_half}.admin") is not None:
            import_module(f"apps.mlbackend.{_half}.admin")
