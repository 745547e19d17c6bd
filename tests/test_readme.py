"""The README's Python examples run as written, in order, next to a features.h5."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import make_store, separable

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    """The examples that need only headstart's store (the exported model's example needs
    TensorFlow and an export; tests/test_classify_export.py runs it)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [block for block in blocks if "import tensorflow" not in block]


def test_readme_python_examples_run_and_never_import_tensorflow(tmp_path):
    """h5py, the reader API, heads in Python, plain numpy, the grader's test: one script."""
    X, y = separable(n=1000, dim=256, seed=1)
    make_store(tmp_path / "features.h5", X, y, classes=["Cat", "Dog"])
    blocks = python_blocks()
    assert len(blocks) == 5, "a Python example was added or removed: check this test"
    assert "def test_logreg_head_reaches_90_percent" in blocks[-1]
    script = "\n".join(blocks) + textwrap.dedent("""
        test_logreg_head_reaches_90_percent()
        import numpy as np, sys
        np.testing.assert_allclose(proba, head.predict_proba(X), rtol=1e-9)
        assert list(names[:3]) == [classes[i] for i in head.predict_proba(X[:3]).argmax(1)]
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "heads" / "logreg" / "head.json").is_file()


def test_the_readme_shows_the_slurm_scripts_that_are_tested():
    text = README.read_text(encoding="utf-8")
    for script in ("extract.sbatch", "submit.sh"):
        body = (README.parent / "examples" / "slurm" / script).read_text(encoding="utf-8")
        assert f"```bash\n{body}```" in text, f"README's copy of {script} is out of date"
