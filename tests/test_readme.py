"""The documentation's Python examples run as written, in order, next to a features.h5;
its copies of the Slurm scripts are the tested ones; the README links only to pages that
exist."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import make_store, separable

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# The user guide's pages, in the order the README's table lists them.
PAGES = [REPO / "docs" / name for name in (
    "extract.md", "store.md", "many-machines.md", "heads.md", "predict.md", "audit.md",
    "deploy.md", "performance.md", "guarantees.md", "layout.md")]


def python_blocks() -> list[str]:
    """The examples that need only headstart's store (the exported model's example needs
    TensorFlow and an export; tests/test_classify_export.py runs it)."""
    text = "\n".join(page.read_text(encoding="utf-8") for page in [README, *PAGES])
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
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
    text = (REPO / "docs" / "many-machines.md").read_text(encoding="utf-8")
    for script in ("extract.sbatch", "submit.sh"):
        body = (REPO / "examples" / "slurm" / script).read_text(encoding="utf-8")
        assert f"```bash\n{body}```" in text, f"docs' copy of {script} is out of date"


def test_every_link_to_a_page_or_a_heading_of_the_guide_resolves():
    """README -> docs/page.md#heading and page -> page#heading: the file and the heading
    (GitHub's anchor of it) exist."""
    def anchors(page: Path) -> set[str]:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in text.splitlines() if line.startswith("#")}

    assert sorted(page.name for page in PAGES) == sorted(
        p.name for p in (REPO / "docs").glob("*.md"))
    for page in [README, *PAGES]:
        for target, anchor in re.findall(r"\]\(((?:docs/)?[\w\-]*\.md)?#?([\w\-]*)\)",
                                         page.read_text(encoding="utf-8")):
            if not target and not anchor:
                continue
            linked = (page.parent / target) if target else page
            assert linked.is_file(), f"{page.name} links to {target}, which does not exist"
            if anchor:
                assert anchor in anchors(linked), f"{page.name} links to {target}#{anchor}"
