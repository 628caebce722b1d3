"""Publishing into the model store: atomic link swap, readable files, rollback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from bot.training.publish import list_versions, publish, rollback, staging_dir


def _finished_folder(models_dir: Path, marker: str) -> Path:
    folder = staging_dir(models_dir, "acct")
    (folder / "config.json").write_text(marker)
    private = folder / "model.safetensors"
    private.write_bytes(b"weights")
    private.chmod(0o600)  # as safetensors leaves it
    return folder


def test_published_files_are_readable_by_other_users(tmp_path: Path) -> None:
    served = publish(tmp_path, "acct", _finished_folder(tmp_path, "v1"), "v1", keep_versions=2)
    for path in served.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path.name


def test_the_served_link_moves_to_the_new_version_and_back_on_rollback(tmp_path: Path) -> None:
    publish(tmp_path, "acct", _finished_folder(tmp_path, "one"), "v1", keep_versions=2)
    publish(tmp_path, "acct", _finished_folder(tmp_path, "two"), "v2", keep_versions=2)
    assert os.readlink(tmp_path / "acct").endswith("v2")
    assert (tmp_path / "acct" / "config.json").read_text() == "two"
    rollback(tmp_path, "acct")
    assert (tmp_path / "acct" / "config.json").read_text() == "one"
    assert [p.name for p in list_versions(tmp_path, "acct")] == ["v1", "v2"]
