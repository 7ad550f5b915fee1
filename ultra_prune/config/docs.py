"""Every text that lists the keys, made from the key table: ``yolo cfg``'s rows, ``yolo prune help``'s rows and the
README's argument table.

    python -m ultra_prune.config.docs [README.md]          rewrite the table between the README's markers
    python -m ultra_prune.config.docs --check [README.md]  exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from ultra_prune.config.keys import COMMAND_KEYS, INF, KEYS, SHARED, SHARED_DEFAULTS, Key

START, END = "<!-- args:start -->", "<!-- args:end -->"


def cfg_rows() -> str:
    """ultra-prune's keys as ``yolo cfg`` shows the stock ones (yaml: ``key: default # help``)."""
    def shown(d):
        return "null" if d is None else str(d).lower() if isinstance(d, bool) else d

    return "\n".join(f"{k}: {shown(key.default)} # {key.help}" for k, key in KEYS.items())


def command_rows(command: str) -> str:
    """``key=default  help`` for every key ``command`` takes, as ``yolo prune help`` lists them."""
    rows = []
    for k in COMMAND_KEYS[command]:
        default, text = (KEYS[k].default, KEYS[k].help) if k in KEYS else (SHARED_DEFAULTS[k], SHARED[k])
        rows.append(f"        {k + '=' + ('' if default is None else str(default)):<28} {text}")
    return "\n".join(rows)


def values(key: Key) -> str:
    """What a number key takes, in words: ``in (0, 1]``, ``>= 1``, ``an integer >= 1``."""
    if key.kind != "number":
        return ""
    if key.high == INF:
        text = f"{'>' if key.open_low else '≥'} {key.low:g}"
    else:
        text = f"in {'(' if key.open_low else '['}{key.low:g}, {key.high:g}{')' if key.open_high else ']'}"
    return f"an integer {text}" if key.integer else text


def readme_table() -> str:
    """The README's argument table (markdown): each key, its default, its help text and the values it takes."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for k, key in KEYS.items():
        text = key.help.replace("|", "\\|") + (f"; {values(key)}" if values(key) else "")
        rows.append(f"| `{k}` | `{key.default}` | {text} |")
    return "\n".join(rows)


def with_table(text: str) -> str | None:
    """``text`` with the table between its markers made anew; None if it has no markers."""
    if START not in text or END not in text:
        return None
    head, rest = text.split(START, 1)
    return f"{head}{START}\n{readme_table()}\n{END}{rest.split(END, 1)[1]}"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    path = Path(next((a for a in argv if a != "--check"), "README.md"))
    text = path.read_text()
    new = with_table(text)
    if new is None:
        print(f"{path} has no {START} ... {END} markers", file=sys.stderr)
        return 1
    if check:
        print(f"{path}: the argument table is {'up to date' if new == text else 'out of date'}")
        return int(new != text)
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
