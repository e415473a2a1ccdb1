"""Every bad input exits 2 with one line on stderr and no traceback (or the documented 1), changes
no existing file and reads nothing beyond what it was given."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from corpus import SECRET, build

from xputools.cli import cli


def _digests(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("badinput")
    return d, build(d)


def _case_ids():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [name for name, _, _ in build(Path(tmp))]


@pytest.mark.parametrize("name", _case_ids())
def test_bad_input_is_one_line_and_the_documented_exit(corpus, name, monkeypatch):
    d, cases = corpus
    _, args, expected = next(c for c in cases if c[0] == name)
    monkeypatch.chdir(d)  # the SECRET beside the program must stay unread
    before = _digests(d)
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    err = result.stderr
    assert result.exit_code == expected, (args, result.stdout[-500:], err)
    assert "Traceback" not in err and "internal error" not in err
    if expected == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: ")
    assert SECRET.decode() not in result.stdout + err
    after = _digests(d)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing file changed"
    assert not [k for k in after if k not in before], f"{name} left files behind: {set(after) - set(before)}"


def test_outside_file_refusal_says_the_same_whether_the_file_exists(corpus, monkeypatch):
    d, cases = corpus
    monkeypatch.chdir(d)
    errs = []
    for name in ("onnx-external-outside-exists", "onnx-external-outside-missing"):
        _, args, _ = next(c for c in cases if c[0] == name)
        err = CliRunner().invoke(cli, args).stderr
        errs.append(err.replace("ext_exists", "M").replace("ext_missing", "M").replace("secret.bin", "F")
                    .replace("nothing.bin", "F").replace("o11", "O").replace("o12", "O"))
    assert errs[0] == errs[1], errs


def test_corpus_size():
    # the corpus is the list of escapes; it only grows
    assert len(_case_ids()) >= 50
    assert os.path.basename(__file__) == "test_badinput.py"
