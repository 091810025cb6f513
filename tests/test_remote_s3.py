"""An S3 remote on a loopback S3 server (moto): push the pipeline's outputs including the call cache, wipe, pull,
identical bytes and a clean `dvc status`; then a fresh clone's `dvc repro --pull --allow-missing` runs nothing.
The endpoint is in the repo config; credentials come only from environment variables and never reach a tracked file."""

from __future__ import annotations

import logging
import shutil

import pytest
from dvc_helpers import copy_pipeline, dvc, files_under, git, init_repo, ran_stages, run

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
