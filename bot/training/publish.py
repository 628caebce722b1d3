"""Atomic publishing into the model store (layout in ``bot.model_store``).

A finished folder is moved (same filesystem, so a rename) to
``.versions/<name>/<version>/``; then a new symlink is created beside ``<name>`` and renamed
over it. ``rename(2)`` replaces the link atomically, so ``models/<name>`` always points at a
complete version. Older versions beyond ``keep_versions`` are pruned, never the serving one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bot.model_store import STAGING_DIR, VERSIONS_DIR


def new_version() -> str:
    """Sortable, unique-enough version id: UTC time to the microsecond."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def staging_dir(models_dir: Path, name: str) -> Path:
    """A fresh work folder on the store's filesystem, invisible to readers."""
    root = Path(models_dir) / STAGING_DIR
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-{os.getpid()}-", dir=root))
    folder.chmod(0o755)  # mkdtemp makes it private; published models are read by the bot
    return folder


def publish(models_dir: Path, name: str, folder: Path, version: str, keep_versions: int) -> Path:
    """Make ``folder`` the serving version of ``name``; return the version's path."""
    models_dir = Path(models_dir)
    versions = models_dir / VERSIONS_DIR / name
    versions.mkdir(parents=True, exist_ok=True)
    target = versions / version
    _seal_files(folder)
    os.replace(folder, target)
    _fsync_dir(versions)

    link = models_dir / name
    if link.exists() and not link.is_symlink():
        raise FileExistsError(f"{link} is a real folder, not a published model link")
    tmp_link = models_dir / f".{name}.{os.getpid()}.link"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(os.path.relpath(target, models_dir), tmp_link)
    os.replace(tmp_link, link)
    _fsync_dir(models_dir)
    prune_versions(models_dir, name, keep_versions)
    return target


def rollback(models_dir: Path, name: str) -> Path:
    """Serve the version published before the current one; return its path."""
    models_dir = Path(models_dir)
    current = (models_dir / name).resolve()
    older = [v for v in list_versions(models_dir, name) if v.name < current.name]
    if not older:
        raise FileNotFoundError(f"no earlier version of {name} to roll back to")
    previous = older[-1]
    tmp_link = models_dir / f".{name}.{os.getpid()}.link"
    os.symlink(os.path.relpath(previous, models_dir), tmp_link)
    os.replace(tmp_link, models_dir / name)
    return previous


def list_versions(models_dir: Path, name: str) -> list[Path]:
    """Version folders of ``name``, oldest first."""
    versions = Path(models_dir) / VERSIONS_DIR / name
    if not versions.is_dir():
        return []
    return sorted((p for p in versions.iterdir() if p.is_dir()), key=lambda p: p.name)


def prune_versions(models_dir: Path, name: str, keep_versions: int) -> None:
    serving = (Path(models_dir) / name).resolve()
    versions = list_versions(models_dir, name)
    for old in versions[: max(0, len(versions) - keep_versions)]:
        if old.resolve() != serving:
            shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(models_dir: Path) -> list[Path]:
    """Remove work folders left by trainings whose process is gone (killed, crashed).

    The owner's pid is in the folder name (see :func:`staging_dir`); folders of live
    processes, this one included, are left alone. Returns what was removed.
    """
    root = Path(models_dir) / STAGING_DIR
    if not root.is_dir():
        return []
    removed: list[Path] = []
    for entry in root.iterdir():
        match = _STAGING_NAME.fullmatch(entry.name)
        if match is None or _pid_alive(int(match["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


_STAGING_NAME = re.compile(r"(?P<name>.+)-(?P<pid>\d+)-[^-]+")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _seal_files(folder: Path) -> None:
    """Make every file readable and flushed to disk before the rename makes it visible.

    Some writers (safetensors among them) create files private to their owner; the bot may
    serve the store as another user, and ``pipeline(...)`` users expect a normal folder.
    """
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
