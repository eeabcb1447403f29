"""CLI commands, one module per command group; importing this package registers them all.

Each module imports `app` from `labeler.cli` and decorates its functions with `@app.command()`.
Heavy libraries are imported inside the command functions so that `labeler --help` stays fast.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")
