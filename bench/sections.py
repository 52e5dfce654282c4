"""bench/RESULTS.md is made of sections, one per benchmark script; each
script rewrites its own section and leaves the others as they are."""

from __future__ import annotations

import re
from pathlib import Path

TITLE = "# Benchmark results\n"


def write_section(path: Path, name: str, text: str) -> None:
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{text.strip()}\n{end}\n"
    old = path.read_text() if path.exists() else TITLE
    # Files from before sections: keep only the title.
    if "<!-- section:" not in old:
        old = TITLE
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    new = pattern.sub(lambda _: block, old) if start in old else old.rstrip() + "\n\n" + block
    path.write_text(new)
