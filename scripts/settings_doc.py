"""Write docs/settings.md from the models: every setting (lab.config.Settings) and every server
field (lab.domain.spec.ServerSpec), with its default and the sentence that documents it.

    python scripts/settings_doc.py          # rewrite docs/settings.md
    python scripts/settings_doc.py --check  # exit 1 when docs/settings.md is not what the models say

tests/test_docs_settings.py runs the check, so adding a setting or a field without its docs fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.config import Settings  # noqa: E402
from lab.domain import spec  # noqa: E402

DOC = ROOT / "docs" / "settings.md"

HEAD = """# Settings and server fields

Generated from the code by `python scripts/settings_doc.py` (tests/test_docs_settings.py fails when
this page and the models disagree): settings are declared once in `lab/config.py`, server fields once
in `lab/domain/spec.py`. Everything else (the API's request models and OpenAPI schema, `lab run` options,
the dashboard form, `GET /api/v1/config`, the CSV columns) is derived from those declarations.
"""


def _default(value: object) -> str:
    if value is None or value == "":
        return "(unset)"
    return f"`{value}`"


def settings_table() -> list[str]:
    lines = ["## Settings", "",
             "Environment variables read by `lab` and `lab serve` (and nowhere else); sizes take units (`1G`).", "",
             "| variable | default | what it does |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        default = "(set)" if name == "token" else _default(info.default)
        lines.append(f"| `LAB_{name.upper()}` | {default} | {info.description or ''} |")
    return lines


def fields_table() -> list[str]:
    lines = ["## Server fields", "",
             "In the API's `server` objects, as `lab run` options, and in the run form. Bounds come from the",
             "settings above (shown here with their defaults). The layer says where a field acts: `source` (the image",
             "copied), `filters` (a parameter of the nbdkit filter stack) or `backend` (what sits under the filter",
             "stack: the server kind, its plugin and disk; the rules between fields are rules between these).", "",
             "| field | option | kind | layer | default | bounds or choices | what it does |",
             "|---|---|---|---|---|---|---|"]
    for row in spec.field_table():
        if row.get("min_text") is not None:
            bounds = f"{row['min_text']} to {row['max_text']}"
        else:
            bounds = ", ".join(row["choices"])
        default = _default(row["default_text"])
        lines.append(f"| `{row['name']}` | `{row['option']}` | {row['kind']} | {row['layer']} | {default} | {bounds} "
                     f"| {row['help']} |")
    return lines


def render() -> str:
    return "\n".join([HEAD, *settings_table(), "", *fields_table(), ""])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args()
    text = render()
    if args.check:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python scripts/settings_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
