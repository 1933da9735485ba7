"""`make docs-check` finds the documented commands and fails when one errors (no Ray: tiny pages)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_check", REPO / "scripts" / "docs_check.py")
docs_check = importlib.util.module_from_spec(_spec)
sys.modules["docs_check"] = docs_check  # dataclasses look their module up
_spec.loader.exec_module(docs_check)

PAGE = """# A page

```bash
mkdir -p out   # a comment stays with its command
# a comment line is no command
echo one \\
  two > out/x.txt
```

```console
$ cat out/x.txt
one two
$ test -s out/x.txt
$ for n in 1 2; do
>   echo $n >> out/n.txt
> done
```

```text
crpbot train --coin BTC [--config FILE]
```

<!-- docs-check: not run: needs a cluster -->
```bash
ray up cluster.yaml -y
```
"""


def _site(tmp_path: Path, page_text: str) -> Path:
    (tmp_path / "docs").mkdir()
    for name in docs_check.LINKED:
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("# r\n")
    (tmp_path / "docs" / "page.md").write_text(page_text)
    return tmp_path


def test_blocks_are_bash_lines_and_prompted_console_lines_with_continuations(tmp_path: Path) -> None:
    repo = _site(tmp_path, PAGE)
    blocks = docs_check.blocks_of(repo / "docs" / "page.md")
    assert [b.commands for b in blocks] == [
        ("mkdir -p out   # a comment stays with its command", "echo one two > out/x.txt"),
        ("cat out/x.txt", "test -s out/x.txt", "for n in 1 2; do\n  echo $n >> out/n.txt\ndone"),
        ("ray up cluster.yaml -y",),
    ]
    assert [b.not_run_reason for b in blocks] == [None, None, "needs a cluster"]


def test_a_page_runs_in_order_and_a_failing_command_fails_the_check(tmp_path: Path) -> None:
    repo = _site(tmp_path, PAGE)
    assert docs_check.main(["--repo", str(repo)]) == 0
    broken = PAGE.replace("test -s out/x.txt", "test -s out/missing.txt\n$ echo never")
    (repo / "docs" / "page.md").write_text(broken)
    failures = docs_check.run_page(
        repo / "docs" / "page.md", docs_check.blocks_of(repo / "docs" / "page.md"), repo, 30.0
    )
    assert len(failures) == 1 and "test -s out/missing.txt" in failures[0] and "exited 1" in failures[0]
    assert docs_check.main(["--repo", str(repo)]) == 1


def test_the_real_docs_run_commands_and_every_skipped_block_says_why() -> None:
    """Each page's commands are found; a block left to a test names a test file that exists."""
    blocks = [b for page in docs_check.pages(REPO) for b in docs_check.blocks_of(page)]
    runnable = [c for b in blocks if b.not_run_reason is None for c in b.commands]
    assert any(c.startswith("crpbot train") for c in runnable)
    assert any(c.startswith("crpbot evaluate") for c in runnable)
    for block in blocks:
        if block.not_run_reason is None:
            continue
        for named in re.findall(r"tests/test_\w+\.py", block.not_run_reason):
            assert (REPO / named).exists(), f"{block.page.name}:{block.line} names missing {named}"
