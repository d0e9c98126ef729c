"""The README's tables of the transfer conditions and their options, generated from the
registry (`rltransfer.strategies.registry`), as ``run --help`` is.

``python -m rltransfer.strategies.catalog`` rewrites the README's block between `BEGIN` and
`END`; ``--check`` exits 1 when it is out of date (the test suite checks it too). Torch-free,
like the registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import registry

BEGIN = "<!-- generated from the registry: python -m rltransfer.strategies.catalog -->"
END = "<!-- end of the generated tables -->"
README = Path(__file__).resolve().parents[2] / "README.md"

_TAKES = {
    registry.NOTHING: "nothing",
    registry.POLICY: "its policy, rebuilt from its weights, acting or teaching while the "
                     "target trains",
    registry.TRANSITIONS: "transitions its policy collects on the target",
    registry.ENV: "its env, stepped by the target's policy while it trains (and its weights "
                  "with init=...)",
}
_COPIES = {registry.ALL: "every tensor that matches by name and shape",
           registry.FEATURES: "its feature layers", registry.NONE: "its weights, as below"}


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _algorithms(algos: tuple[str, ...], refuses: tuple[tuple[str, str], ...]) -> str:
    if algos:
        return ", ".join(algos)
    if refuses:
        return "all but " + ", ".join(algo for algo, _ in refuses)
    return "all"


def _from_source(entry: registry.Condition) -> str:
    if entry.takes != registry.WEIGHTS:
        return _TAKES[entry.takes]
    text = "weights: " + _COPIES[entry.copies]
    return text + (", feature layers frozen" if entry.freezes == registry.FEATURES else "")


def conditions_table() -> list[str]:
    """A row per condition: its algorithms, what it takes from the source, what it does,
    its options."""
    rows = ["| condition | algorithms | from the source | what it does | options |",
            "| --- | --- | --- | --- | --- |"]
    for entry in registry.CONDITIONS.values():
        options = ", ".join(f"`{o.key}`" for o in entry.options) or "—"
        rows.append(f"| `{entry.name}` | {_algorithms(entry.algos, entry.refuses)} | "
                    f"{_cell(_from_source(entry))} | {_cell(entry.doc)} | {options} |")
    return rows


def options_table() -> list[str]:
    """A row per option (an option several conditions share is one row)."""
    seen: list[tuple[registry.Option, list[str]]] = []
    for entry in registry.CONDITIONS.values():
        for option in entry.options:
            known = next((names for o, names in seen if o is option), None)
            if known is None:
                seen.append((option, [entry.name]))
            else:
                known.append(entry.name)
    rows = ["| option | of | values | default | what it does |",
            "| --- | --- | --- | --- | --- |"]
    for option, names in seen:
        where = ", ".join(f"`{name}`" for name in names)
        only = _algorithms(option.algos, option.refuses)
        if only != "all":
            where += f" ({only})"
        default = "—" if option.default is None else f"`{registry.format_value(option.default)}`"
        rows.append(f"| `{option.key}` | {where} | {_cell(option.valid or option.kind.__name__)}"
                    f" | {default} | {_cell(option.doc)} |")
    return rows


def markdown() -> str:
    """The generated block, its markers included."""
    return "\n".join([BEGIN, "", *conditions_table(), "", *options_table(), "", END])


def updated(text: str) -> str:
    """`text` (the README) with its generated block replaced by the registry's."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + markdown() + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rltransfer.strategies.catalog",
                                     description="Write the README's tables of conditions "
                                                 "and options from the registry.")
    parser.add_argument("--check", action="store_true",
                        help="only check: exit 1 if the README's tables are out of date")
    parser.add_argument("--readme", type=Path, default=README,
                        help="the README to update (default: the repository's)")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    new = updated(text)
    if args.check:
        if new != text:
            print(f"{args.readme}: the tables of conditions are out of date: run python -m "
                  f"rltransfer.strategies.catalog", file=sys.stderr)
            return 1
        return 0
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
