"""A module that loads slowly in a process-pool child when ``$SLOW_CHILD_IMPORT`` says so
(seconds): a child that starts up slowly. A task referring to it has a new child import
it while it loads the call, before the body starts."""

from __future__ import annotations

import multiprocessing
import os
import time

if multiprocessing.parent_process() is not None and os.environ.get("SLOW_CHILD_IMPORT"):
    time.sleep(float(os.environ["SLOW_CHILD_IMPORT"]))

LOADED = True
