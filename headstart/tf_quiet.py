"""Import and start TensorFlow without its start-up chatter on the user's terminal.

TensorFlow's C++ runtime prints info lines (oneDNN, CUDA probing, absl) straight to
file descriptor 2, some before TF_CPP_MIN_LOG_LEVEL is consulted, so the environment
variable alone does not silence them. While TensorFlow starts, fd 2 points at a
temporary file; afterwards every line that is not known start-up noise is passed
through, and if the block raised, everything is. Set HEADSTART_TF_LOGS=1 to see all.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Informational lines native code writes during start-up: noise in a report or a log.
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog|I\d{4} |W\d{4} .*(cuda|TensorRT)"
    r"|E\d{4} .*(cuInit|cuda_platform|cudart|cuda_diagnostics|kernel driver)"
    r"|To enable the following instructions"
)


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Hold back fd-2 output of native code in the block; replay all but start-up noise."""
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
            lines = sink.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines
                                     if failed or not NATIVE_NOISE.match(line)))
            sys.stderr.flush()


def import_keras():
    """keras, with TensorFlow imported and its devices probed quietly.

    Raises ImportError unchanged when TensorFlow is missing; callers word the remedy.
    """
    with native_stderr_captured():
        import keras
        import tensorflow as tf

        tf.config.list_physical_devices()  # probes CUDA now, inside the quiet block
    return keras
