"""Import TensorFlow without its start-up chatter on the user's terminal.

TensorFlow's C++ runtime prints info lines (oneDNN, CUDA probing) straight to file
descriptor 2 before its logging is configured, so TF_CPP_MIN_LOG_LEVEL alone does not
silence them. While TensorFlow starts, fd 2 points at a temporary file; anything that
turns out to be an error (a line starting with E or F, or a Python exception) is
replayed. Set HEADSTART_TF_LOGS=1 to see everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold back fd-2 output of native code in the block, replaying error lines afterwards."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("HEADSTART_TF_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    failed = False
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                if failed or line[:1] in ("F",) or "Traceback" in line:
                    print(line, file=sys.stderr)


def import_keras():
    """keras, with TensorFlow imported quietly (callers import tensorflow afterwards freely)."""
    with native_stderr_captured():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now, inside the quiet block
    return keras
