"""The README's commands as tests run them: exactly as written there."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_commands(heading: str, readme: Path = README) -> list[str]:
    """The command lines of the first bash block under the README's ``## <heading>`` section (up to the next
    ``## `` heading): every non-empty line that is not a comment, as written."""
    text = readme.read_text(encoding="utf-8")
    parts = text.split(f"## {heading}", 1)
    assert len(parts) == 2, f"README: no section {heading!r}"
    section = parts[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"README: no bash block under {heading!r}"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
