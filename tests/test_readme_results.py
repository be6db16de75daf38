"""The README's measured results are generated from the committed quick-preset claims (docs/claims-quick.json):
the README must say exactly what that file gives (src/momentum_ntk/readme_results.py).

    PYTHONPATH=src python -m pytest tests/test_readme_results.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from momentum_ntk import judges, readme_results
from momentum_ntk.entry import cli
from momentum_ntk.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "docs" / "claims-quick.json"
REGIME = ROOT / "docs" / "regime" / "onset.csv"  # the regime sweep's reference result (onset_n.csv beside it)


def test_readme_block_matches_the_committed_claims(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--claims", str(CLAIMS), "--regime", str(REGIME), "--readme", str(ROOT / "README.md"), "--check"]
    assert cli(readme_results.main, argv) == 0, capsys.readouterr().out


def test_committed_claims_are_the_current_claims_format() -> None:
    report = json.loads(CLAIMS.read_text())
    assert [c["id"] for c in report["claims"]] == [c.id for c in judges.REGISTRY]
    assert set(report["thresholds"]) == set(judges.THRESHOLDS)
    assert set(report["datasets"]) == {"mnist5k", "fmnist"}  # the quick preset with Debian's FMNIST installed


def test_check_fails_and_names_the_fix_when_the_readme_drifts(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    (tmp_path / "docs" / "regime").mkdir(parents=True)
    claims_copy = shutil.copy(CLAIMS, tmp_path / "docs" / CLAIMS.name)
    regime_copy = shutil.copy(REGIME, tmp_path / "docs" / "regime" / REGIME.name)
    shutil.copy(REGIME.with_name("onset_n.csv"), tmp_path / "docs" / "regime" / "onset_n.csv")
    text = readme.read_text()
    block = text[text.index(readme_results.BEGIN):text.index(readme_results.END)]
    readme.write_text(text.replace(block, block.replace("| NAG below HB |", "| NAG below HB (edited) |")))
    argv = ["--claims", str(claims_copy), "--regime", str(regime_copy), "--readme", str(readme)]
    assert cli(readme_results.main, [*argv, "--check"]) == 1
    out = capsys.readouterr().out
    assert "python -m momentum_ntk.readme_results --claims" in out and str(readme) in out
    assert cli(readme_results.main, argv) == 0  # regenerating mends it, and leaves the rest of the file alone
    assert readme.read_text() == (ROOT / "README.md").read_text()


def test_every_number_comes_from_the_claims_file() -> None:
    """Change one verdict count and one slope in a copy of the claims: the generated text changes with them."""
    report = json.loads(CLAIMS.read_text())
    before = readme_results.render(report, "x.json")
    report["claims"][0]["by_dataset"]["mnist5k"]["counts"]["holds"] = 97
    report["linearization_width_slopes"]["mnist5k"]["lin_h0"]["slope"] = -0.1234
    after = readme_results.render(report, "x.json")
    assert "97 / " in after and "97 / " not in before
    assert "−0.12 [" in after


def test_splice_needs_both_markers() -> None:
    with pytest.raises(UserError, match="results:end"):
        readme_results.splice("no markers here", "x")
    text = f"a\n{readme_results.BEGIN}\nold\n{readme_results.END}\nb\n"
    assert readme_results.splice(text, "NEW") == "a\nNEW\nb\n"


def test_regime_block_comes_from_the_onset_table() -> None:
    import csv

    onsets = list(csv.DictReader(REGIME.open()))
    exps = list(csv.DictReader(REGIME.with_name("onset_n.csv").open()))
    block = readme_results.render_regime(onsets, exps, "x.csv")
    ns = sorted({int(float(r["n"])) for r in onsets})
    assert all(f"n = {n}" in block for n in ns)
    first = onsets[0]
    first["onset"], first["onset_extrapolated"], first["max_width"] = "", "123456", "65536"
    assert "> 65536 (≈ 1.2e+05)" in readme_results.render_regime(onsets, exps, "x.csv")
