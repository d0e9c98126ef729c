"""The README's tables of conditions and options are the registry's (`strategies.catalog`)."""

from __future__ import annotations

import dataclasses

from rltransfer.strategies import catalog, registry


def test_the_readmes_tables_are_generated_from_the_registry():
    readme = catalog.README.read_text(encoding="utf-8")
    assert catalog.markdown() in readme
    assert catalog.main(["--check"]) == 0
    for entry in registry.CONDITIONS.values():  # a row per condition, its options listed
        row = next(line for line in catalog.conditions_table()
                   if line.startswith(f"| `{entry.name}` |"))
        assert all(f"`{option.key}`" in row for option in entry.options)


def test_a_new_condition_makes_the_readme_stale_until_it_is_regenerated(tmp_path, monkeypatch,
                                                                       capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{catalog.BEGIN}\nold\n{catalog.END}\n\nafter\n",
                      encoding="utf-8")
    assert catalog.main(["--check", "--readme", str(readme)]) == 1
    assert capsys.readouterr().err == (
        f"{readme}: the tables of conditions are out of date: run python -m "
        f"rltransfer.strategies.catalog\n")
    entry = dataclasses.replace(registry.CONDITIONS["finetune"], name="finetune-twice",
                                doc="a demo entry")
    monkeypatch.setattr(registry, "CONDITIONS", {**registry.CONDITIONS,
                                                 "finetune-twice": entry})
    assert catalog.main(["--readme", str(readme)]) == 0
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\n" + catalog.BEGIN) and text.endswith("\n\nafter\n")
    assert ("| `finetune-twice` | all | weights: every tensor that matches by name and shape "
            "| a demo entry | `lr_scale`, `norm`, `eps`, `obs_map` |") in text
    assert "| `lr_scale` | `finetune`, `freeze-features`, `reinit-head`, `finetune-twice` " \
           "(all but ars, trpo) | a number in (0, 1] | `1` |" in text
    assert catalog.main(["--check", "--readme", str(readme)]) == 0
