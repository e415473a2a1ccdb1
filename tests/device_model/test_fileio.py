"""Output files: never over an existing file without force, never over an input, whole or not at all."""
from __future__ import annotations

import errno

import pytest

from device_model.fileio import OutputError, atomic_output, check_output, write_bytes_atomic


def test_refuses_existing_file_without_force(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"keep")
    with pytest.raises(OutputError, match="--force"):
        write_bytes_atomic(out, b"new")
    assert out.read_bytes() == b"keep"
    write_bytes_atomic(out, b"new", force=True)
    assert out.read_bytes() == b"new"


def test_refuses_to_write_over_an_input_even_with_force(tmp_path):
    src = tmp_path / "prog.xasm"
    src.write_text("source")
    with pytest.raises(OutputError, match="input"):
        write_bytes_atomic(src, b"binary", force=True, inputs=[src])
    assert src.read_text() == "source"


def test_missing_directory_is_one_clear_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "nope" / "out.npz")


def test_failure_mid_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="no space left"):
        with atomic_output(out, force=True) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
