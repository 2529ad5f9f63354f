"""The documentation stays in step with the code: the generated model-argument page, and every page reachable."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_model_args_page_is_current():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "generate_model_args_doc.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_docs_page_and_task_readme_is_linked_from_the_readme():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = set(re.findall(r"\]\(([^)#\s]+)", readme))
    pages = {p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")}
    pages |= {p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*/README.md")}
    assert pages - links == set()
    for link in links:
        if not link.startswith("http"):
            assert (REPO / link).exists(), link


def test_the_ci_blocks_keep_their_form():
    """CI extracts the command after each marker; both must stay a single ```bash block."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in ("<!-- main-job -->", "<!-- test-command -->"):
        assert re.search(re.escape(marker) + r"\n```bash\n[^\n]+\n```\n", readme), marker
