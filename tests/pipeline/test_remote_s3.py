"""An S3 remote on a loopback S3 server (moto): push the pipeline's outputs including the call cache, wipe, pull,
identical bytes and a clean `dvc status`; then a fresh clone's `dvc repro --pull --allow-missing` runs nothing.
The endpoint is in the repo config; credentials come only from environment variables and never reach a tracked file.
Sharing paid calls (`saferinstruct caches pull`): a teammate who changes input rows pays only for those rows, and the
caches two branches paid for merge into their union."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import pytest
from dvc_helpers import copy_pipeline, dvc, files_under, git, init_repo, ran_stages, run, write_jsonl

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")
pytest.importorskip("dvc_s3")

BUCKET = "saferinstruct-test"
CREDS = {"AWS_ACCESS_KEY_ID": "AKIATESTKEY0000LOOP", "AWS_SECRET_ACCESS_KEY": "loopback-secret-do-not-store",
         "AWS_DEFAULT_REGION": "us-east-1"}
OUTPUTS = ("data/instruction_verdicts.jsonl", "data/preferences/train.jsonl", "cache/judge")


@pytest.fixture(scope="module")
def s3_endpoint():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=CREDS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=CREDS["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _outputs(repo) -> dict[str, bytes]:
    out = {}
    for rel in OUTPUTS:
        path = repo / rel
        out.update({f"{rel}/{k}": v for k, v in files_under(path).items()} if path.is_dir()
                   else {rel: path.read_bytes()})
    return out


def test_push_wipe_pull_and_fresh_clone(tmp_path, s3_endpoint):
    repo = init_repo(tmp_path / "repo")
    copy_pipeline(repo)
    dvc(repo, "remote", "add", "-d", "s3", f"s3://{BUCKET}/store")
    dvc(repo, "remote", "modify", "s3", "endpointurl", s3_endpoint)
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "pipeline with s3 remote")
    dvc(repo, "push", **CREDS)

    objects = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **{
        "aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"]})
    keys = [o["Key"] for o in objects.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    before = _outputs(repo)
    assert sum(k.startswith("cache/judge/") for k in before) == 12  # the call cache is among the outputs
    assert len(keys) >= len(before)  # every output file (plus the .dir manifests) is in the bucket

    # credentials: only in the environment, never in a tracked (or any) config file
    tracked = run(["git", "grep", "-I", "-l", "-e", CREDS["AWS_SECRET_ACCESS_KEY"], "-e", CREDS["AWS_ACCESS_KEY_ID"]],
                  repo, check=False)
    assert tracked.stdout == "" and not (repo / ".dvc" / "config.local").exists()
    assert s3_endpoint in (repo / ".dvc" / "config").read_text()

    shutil.rmtree(repo / ".dvc" / "cache")
    for rel in OUTPUTS:
        shutil.rmtree(repo / rel) if (repo / rel).is_dir() else (repo / rel).unlink()
    dvc(repo, "pull", **CREDS)
    assert _outputs(repo) == before
    assert "up to date" in dvc(repo, "status").stdout
    assert "in sync" in dvc(repo, "status", "--cloud", **CREDS).stdout

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    out = dvc(clone, "repro", "--pull", "--allow-missing", **CREDS)
    assert ran_stages(out.stdout) == set(), out.stdout
    dvc(clone, "pull", **CREDS)
    assert _outputs(clone) == before
    assert "up to date" in dvc(clone, "status").stdout


# --- sharing paid calls: `saferinstruct caches pull` (docs/sharing.md) ---------------------------------------------

CHANGED = {"i03", "i07"}  # the rows a teammate edits: only their judge calls are new


def _s3_repo(tmp_path, s3_endpoint, prefix: str):
    repo = init_repo(tmp_path / "repo")
    copy_pipeline(repo)
    dvc(repo, "remote", "add", "-d", "s3", f"s3://{BUCKET}/{prefix}")
    dvc(repo, "remote", "modify", "s3", "endpointurl", s3_endpoint)
    return repo


def _edit_rows(repo, ids=CHANGED) -> None:
    """An upstream input change: new instruction text for ``ids``, so the judge stage must re-run for them."""
    path = repo / "data" / "instructions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    write_jsonl(path, [{**r, "instruction": r["instruction"] + " (edited)"} if r["id"] in ids else r for r in rows])


def _judge_calls(repo) -> tuple[int, int]:
    stats = json.loads((repo / "stats" / "judge.json").read_text(encoding="utf-8"))
    return stats["calls"], stats["cache_hits"]


def _entries(repo) -> set[str]:
    return set(files_under(repo / "cache" / "judge"))


def _clone(repo, dest):
    run(["git", "clone", "-q", str(repo), str(dest)], dest.parent)
    return dest


def _caches_pull(repo, *args: str, check: bool = True):
    cli = str(Path(sys.executable).parent / "saferinstruct")
    return run([cli, "caches", "pull", *args], repo, check=check, **CREDS)


def test_teammate_changing_an_input_pays_only_for_the_changed_rows(tmp_path, s3_endpoint):
    repo = _s3_repo(tmp_path, s3_endpoint, "teammate")
    dvc(repo, "repro")
    assert _judge_calls(repo) == (12, 0)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "judged")
    dvc(repo, "push", **CREDS)

    # without the cache pull, `dvc repro --pull` leaves a re-running stage's call cache empty: all 12 paid again
    plain = _clone(repo, tmp_path / "plain")
    _edit_rows(plain)
    out = dvc(plain, "repro", "--pull", "--allow-missing", **CREDS)
    assert "judge" in ran_stages(out.stdout) and _judge_calls(plain) == (12, 0)

    teammate = _clone(repo, tmp_path / "teammate")
    pulled = _caches_pull(teammate)
    assert "12 entries added" in pulled.stdout, pulled.stdout
    assert _entries(teammate) == _entries(repo)
    _edit_rows(teammate)
    out = dvc(teammate, "repro", "--pull", "--allow-missing", **CREDS)
    assert "judge" in ran_stages(out.stdout)
    assert _judge_calls(teammate) == (len(CHANGED), 12 - len(CHANGED))  # paid only for the edited rows
    assert _entries(teammate) > _entries(repo) and len(_entries(teammate)) == 12 + len(CHANGED)


def test_caches_from_two_branches_merge_into_their_union(tmp_path, s3_endpoint):
    repo = _s3_repo(tmp_path, s3_endpoint, "branches")
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main judged")
    git(repo, "checkout", "-q", "-b", "other")
    _edit_rows(repo)  # the branch pays for 2 rows of its own
    dvc(repo, "repro")
    assert _judge_calls(repo) == (len(CHANGED), 12 - len(CHANGED))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "other judged")
    dvc(repo, "push", **CREDS)
    other_entries = _entries(repo)
    git(repo, "checkout", "-q", "main")
    dvc(repo, "checkout", "--force")  # main's own 12 entries (a persisted output keeps whatever it holds otherwise)
    _edit_rows(repo, {"i05"})  # meanwhile main pays for another row
    dvc(repo, "repro")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "main judged again")
    dvc(repo, "push", **CREDS)
    main_entries = _entries(repo)
    assert main_entries - other_entries and other_entries - main_entries  # each branch has calls the other lacks

    teammate = _clone(repo, tmp_path / "teammate")  # on main
    local = teammate / "cache" / "judge" / "zz" / "zz-local-only.json"  # an entry only this clone has
    local.parent.mkdir(parents=True)
    local.write_text("{}", encoding="utf-8")
    pulled = _caches_pull(teammate, "--rev", "origin/other")
    assert "cache/judge @ origin/other: +2" in pulled.stdout, pulled.stdout
    merged = _entries(teammate)
    assert merged == main_entries | other_entries | {"zz/zz-local-only.json"}  # the union; nothing local deleted
    assert len(merged) == 12 + 1 + len(CHANGED) + 1
    again = _caches_pull(teammate, "--rev", "origin/other")
    assert "0 entries added" in again.stdout and _entries(teammate) == merged  # idempotent

    _edit_rows(teammate)  # main (i05 edited) + the branch's edits: every call is already paid for
    dvc(teammate, "repro", "--pull", "--allow-missing", **CREDS)
    assert _judge_calls(teammate) == (0, 12)
