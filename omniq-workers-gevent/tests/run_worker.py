"""Runs one worker the way ``omniq worker --pool POOL --app gevent_app`` will: resolve
the pool, let it prepare the process (gevent patches here), then import the app.

Usage: python run_worker.py POOL CONCURRENCY|default BURST(0/1) [late]
``late`` skips the preparation: ``app.run_worker(pool="gevent")`` from code, where the
pool patches when it starts.
"""

from __future__ import annotations

import sys
import time

from omniq.registry import registry

pool, burst = sys.argv[1], sys.argv[3] == "1"
options = {} if sys.argv[2] == "default" else {"concurrency": int(sys.argv[2])}
if "late" not in sys.argv[4:]:
    getattr(registry.pool(pool), "prepare_process", lambda: None)()

from gevent_app import app  # noqa: E402 - after patching, on purpose

print("ready", flush=True)
started = time.monotonic()
reason = app.run_worker(pool=pool, burst=burst, **options)
print(f"stopped: {reason} after {time.monotonic() - started:.3f} s", flush=True)
