"""A file one test peer creates when it is ready and another waits for (imported by the
peers next to it)."""

import os
import sys
import time


def wait_for(path, who, timeout=20):
    """Returns once `path` exists; exits with a message after `timeout` seconds."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(f"the {who} never got ready")
        time.sleep(0.05)
