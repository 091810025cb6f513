"""Share paid model calls: merge the persisted caches that dvc.lock records at git revisions into the workspace.

`dvc repro --pull` fetches a stage's outputs only when the stage will not re-run. A stage that must re-run (an input or
threshold upstream changed) starts from its persisted call cache as it is in the workspace: empty on a fresh clone, so
it would pay again for every call a teammate already paid for. ``pull_caches`` fetches each persisted output's version
at HEAD (and at other revisions, e.g. a teammate's branch) from the DVC remote into the local DVC cache, then copies in
the entries the workspace lacks. Entries are content-addressed (the file name is the key, the content its result), so
the union of two versions has no conflicts: nothing local is deleted or overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from saferinstruct.errors import UserError

_LEGACY_HASH = "md5-dos2unix"  # lock entries written by DVC 2 (no `hash:` field) live in the legacy cache


class RemoteUnavailable(UserError):
    """The DVC remote could not be read (none configured, unreachable, or refused the credentials)."""


@dataclass(frozen=True)
class LockedDir:
    """One persisted directory output as a revision's dvc.lock records it."""

    rev: str
    path: str  # relative to the repository root
    hash_name: str  # "md5" (DVC 3) or "md5-dos2unix" (DVC 2)
    md5: str  # "<hex>.dir": the manifest listing the directory's files


@dataclass
class MergeResult:
    rev: str
    path: str
    added: int = 0  # entries copied into the workspace
    present: int = 0  # entries the workspace already had
    missing: int = 0  # entries neither in the local DVC cache nor fetched (the remote lacks them)
    manifest_missing: bool = False  # the directory's manifest itself could not be had


def persisted_outputs(repo) -> list[str]:
    """Outputs marked ``persist: true`` in the workspace's dvc.yaml that DVC stores (the call caches, the DPO ref
    log-probs); ``cache: false`` ones (stats, plots kept after a failed run) never reach a remote."""
    return sorted({out.def_path for out in repo.index.outs if out.persist and out.use_cache})


def lock_at(root: Path, rev: str) -> dict:
    """dvc.lock as committed at ``rev`` ({} when that revision has none)."""
    proc = subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        if "does not exist" in proc.stderr or "exists on disk, but not in" in proc.stderr:
            return {}
        raise UserError(f"git show {rev}:dvc.lock failed in {root}: {proc.stderr.strip()} (is {rev!r} a revision?)")
    return yaml.safe_load(proc.stdout) or {}


def locked_dirs(lock: dict, paths: list[str], rev: str) -> list[LockedDir]:
    """The directory versions a lock records for ``paths`` (outputs never run at that revision are absent)."""
    found = []
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            md5 = out.get("md5") or ""
            if out.get("path") in paths and md5.endswith(".dir"):
                found.append(LockedDir(rev, out["path"], out.get("hash", _LEGACY_HASH), md5))
    return found


def fetch(repo, dirs: list[LockedDir], remote: str | None) -> None:
    """Download the manifests and files of ``dirs`` that the local DVC cache lacks from the remote.

    What the remote lacks is not an error here (``merge_dir`` counts it); failing to reach the remote is.
    """
    import logging

    from dvc.config import NoRemoteError
    from dvc_data.hashfile.hash_info import HashInfo

    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.ERROR)  # its "missing cache files" warning lists hashes; render() says it per output
    try:
        # two rounds, as DVC's own fetch does: the manifests first, then the files they list
        repo.cloud.pull({HashInfo(d.hash_name, d.md5) for d in dirs}, remote=remote)
        files = {HashInfo(d.hash_name, e["md5"]) for d in dirs for e in _manifest(repo, d) or []}
        repo.cloud.pull(files, remote=remote)
    except NoRemoteError as err:
        raise RemoteUnavailable("no DVC remote configured (`dvc remote add -d NAME URL`)") from err
    except _storage_errors() as err:
        raise RemoteUnavailable(f"DVC remote unreachable: {type(err).__name__}: {err}") from err
    finally:
        dvc_logger.setLevel(level)


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What reading a remote raises when it is down or refuses us: OSError from fsspec file systems (local, SSH,
    refused connections), DVC's own errors, and botocore's for S3 (endpoint unreachable, no credentials, no bucket)."""
    from dvc.exceptions import DvcException

    errors: tuple[type[BaseException], ...] = (OSError, DvcException)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no S3 plugin installed: no S3 remote either
        return errors
    return (*errors, BotoCoreError, ClientError)


def merge_dir(repo, locked: LockedDir, root: Path) -> MergeResult:
    """Copy every file of ``locked``'s manifest that the workspace directory lacks from the local DVC cache."""
    result = MergeResult(locked.rev, locked.path)
    entries = _manifest(repo, locked)
    if entries is None:
        result.manifest_missing = True
        return result
    odb = _odb(repo, locked)
    dest_root = root / locked.path
    for entry in entries:
        if Path(entry["relpath"]).is_absolute() or ".." in Path(entry["relpath"]).parts:
            raise UserError(f"{locked.path} @ {locked.rev}: manifest {locked.md5} names {entry['relpath']!r}, outside "
                            "the output; refusing to write it (is the DVC cache or remote tampered with?)")
        dest = dest_root / entry["relpath"]
        source = Path(odb.oid_to_path(entry["md5"]))
        if dest.exists():
            result.present += 1
        elif not source.exists():
            result.missing += 1
        else:
            _copy_atomically(source, dest)
            result.added += 1
    return result


def _odb(repo, locked: LockedDir):
    return repo.cache.legacy if locked.hash_name == _LEGACY_HASH else repo.cache.local


def _manifest(repo, locked: LockedDir) -> list[dict] | None:
    """The .dir manifest from the local DVC cache: [{"relpath": ..., "md5": ...}], None when it is not there."""
    path = Path(_odb(repo, locked).oid_to_path(locked.md5))
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _copy_atomically(source: Path, dest: Path) -> None:
    """A plain writable copy (never a link into the DVC cache), renamed into place so a reader never sees half."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.pull")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def pull_caches(root: Path | str, revs: list[str], remote: str | None = None,
                offline: bool = False) -> list[MergeResult]:
    """Merge each persisted output's version at every revision in ``revs`` into the workspace.

    ``offline`` merges only from the local DVC cache (no remote needed). Raises RemoteUnavailable when the remote
    cannot be read; what the local DVC cache already had is merged before that is raised.
    """
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    root = Path(root).resolve()
    try:
        repo = Repo(str(root))
    except NotDvcRepoError as err:
        raise UserError(f"{root}: not a DVC repository (run from the repository root, or pass --repo)") from err
    with repo:
        paths = persisted_outputs(repo)
        dirs = [d for rev in revs for d in locked_dirs(lock_at(root, rev), paths, rev)]
        failure = None
        if dirs and not offline:
            try:
                fetch(repo, dirs, remote)
            except RemoteUnavailable as err:
                failure = err
        results = [merge_dir(repo, d, root) for d in dirs]
    if failure is not None:
        raise RemoteUnavailable(f"{failure} (merged {sum(r.added for r in results)} entries from the local DVC cache)")
    return results


def render(results: list[MergeResult]) -> str:
    """A total line, then one line per output that gained entries or lacks some (quiet when nothing changed)."""
    if not results:
        return "caches pull: dvc.lock records no persisted outputs at the given revisions: nothing to merge"
    added, present = sum(r.added for r in results), sum(r.present for r in results)
    revs = ", ".join(dict.fromkeys(r.rev for r in results))
    lines = [f"caches pull ({revs}): {added} entries added, {present} already present"]
    lines += [f"  {r.path} @ {r.rev}: +{r.added}" + (f", {r.missing} not in the remote" if r.missing else "")
              for r in results if r.added or r.missing]
    absent = [f"{r.path} @ {r.rev}" for r in results if r.manifest_missing]
    if absent:
        lines.append(f"  not in the remote nor the local DVC cache (not pushed yet?): {', '.join(absent)}")
    return "\n".join(lines)
