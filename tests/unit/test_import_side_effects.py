"""Invariant 9, for every module of the package: importing builds nothing (no engine, no XMPP
client, no settings, no thread, no socket), so programs and tools can import any part freely.

One fresh interpreter imports every module found under ``pubsub_cache`` (new modules included)
and checks the state after each import, so a failure names the module that did it.
"""

from __future__ import annotations

import subprocess
import sys

#: Executed by Alembic, never imported: it runs the migrations it is loaded for.
NOT_IMPORTABLE = {"pubsub_cache.migrations.env"}

PROBE = f"""
import gc, importlib, pkgutil, socket, sys, threading

import pubsub_cache

def built():
    classes = [socket.socket]
    for module_name, class_name in [
        ("sqlalchemy.engine", "Engine"),
        ("slixmpp", "BaseXMPP"),
        ("pubsub_cache.ops.settings", "Settings"),
        ("pubsub_cache.events.log", "EventLog"),
    ]:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if cls is not None:
            classes.append(cls)
    kinds = tuple(classes)
    found = sorted({{type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)}})
    if threading.active_count() != 1:
        found.append(f"{{threading.active_count() - 1}} threads")
    return found

names = [m.name for m in pkgutil.walk_packages(pubsub_cache.__path__, "pubsub_cache.")]
assert len(names) > 50, names
for name in names:
    if name in {sorted(NOT_IMPORTABLE)!r}:
        continue
    importlib.import_module(name)
    found = built()
    if found:
        print(f"importing {{name}} built {{', '.join(found)}}")
        sys.exit(1)
print(f"imported {{len(names)}} modules")
"""


def test_importing_any_module_of_the_package_builds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("imported ")
