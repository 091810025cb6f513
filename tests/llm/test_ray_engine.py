"""The Ray engine (`engine: ray`): replicas on a 2-CPU local Ray cluster give the in-process outputs in input order,
only cache misses reach Ray, and a run whose shard failed resumes paying only the calls it did not finish."""

from __future__ import annotations

import pytest

from saferinstruct.llm.base import ChatRequest, GenerationParams, make_backend
from saferinstruct.llm.cache import CallCache
from saferinstruct.llm.gateway import BudgetExceeded, Gateway, Prices

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

PROMPTS = ["Write a short poem about the sea.", "How do I bake bread?", "The quick brown fox", "Mix flour, water",
           "I'm sorry", "Below is a response to a certain instruction.", "0123456789 abc", "Tell me a story"]


@pytest.fixture(scope="module", autouse=True)
def local_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _requests(n: int = 10) -> list[ChatRequest]:
    return [ChatRequest.chat(f"prompt {i}") for i in range(n)]


def _fake_on_ray(**extra) -> dict:
    return {"engine": "ray", "num_replicas": 2, "batch_size": 2, **extra}


def test_two_replicas_of_a_tiny_model_match_in_process_generation(varied_model_dir, tmp_path):
    reqs = [ChatRequest.chat(p, params=GenerationParams(max_tokens=8)) for p in PROMPTS]
    opts = {"model_path": str(varied_model_dir), "batch_size": 3}
    local = Gateway(make_backend("transformers", opts), cache_dir=tmp_path / "local")
    on_ray = Gateway(make_backend("transformers", {**opts, "engine": "ray", "num_replicas": 2}),
                     cache_dir=tmp_path / "ray")
    try:
        expected = [(r.text, r.completion_tokens, r.finish_reason) for r in local.complete(reqs)]
        got = [(r.text, r.completion_tokens, r.finish_reason) for r in on_ray.complete(reqs)]
    finally:
        on_ray.close()
    assert got == expected
    assert len({text for text, _, _ in got}) == len(PROMPTS)  # distinct outputs: the order is really checked
    assert on_ray.identity == local.identity  # the engine is not in the cache key: both runs share one cache
    assert on_ray.stats.calls == len(PROMPTS)


def test_failed_shard_resumes_paying_only_the_missing_calls(tmp_path):
    reqs = _requests()
    crashed = Gateway(make_backend("fake", _fake_on_ray(crash_on="prompt 5")), cache_dir=tmp_path)
    with pytest.raises(RuntimeError, match="crashed on 'prompt 5'") as err:
        crashed.complete(reqs)
    assert type(err.value) is RuntimeError  # the replica's own error, not Ray's wrapper
    crashed.close()
    cached = len(CallCache(tmp_path))
    assert 0 < cached < len(reqs)  # the other shards in flight came back and were cached

    resumed = Gateway(make_backend("fake", _fake_on_ray()), cache_dir=tmp_path)
    try:
        results = resumed.complete(reqs)
    finally:
        resumed.close()
    assert resumed.stats.calls == len(reqs) - cached and resumed.stats.cache_hits == cached
    in_process = Gateway(make_backend("fake"))
    assert [r.text for r in results] == [r.text for r in in_process.complete(reqs)]


def test_cache_hits_never_reach_ray(tmp_path):
    reqs = _requests(4)
    Gateway(make_backend("fake"), cache_dir=tmp_path).complete(reqs)  # paid in process
    backend = make_backend("fake", _fake_on_ray())
    results = Gateway(backend, cache_dir=tmp_path).complete(reqs)
    assert all(r.cached for r in results)
    assert backend._pool is None  # no replica was ever started


def test_budget_drain_launches_no_more_shards(tmp_path):
    reqs = _requests(12)
    backend = make_backend("fake", _fake_on_ray(num_replicas=1, batch_size=1))
    gateway = Gateway(backend, cache_dir=tmp_path, prices=Prices(prompt=1e6), budget_usd=1.0)  # $2 a call
    try:
        with pytest.raises(BudgetExceeded):
            gateway.complete(reqs)
    finally:
        gateway.close()
    # 1 shard answered, then the one already queued on the replica; nothing launched after the drain.
    assert len(CallCache(tmp_path)) == gateway.stats.calls == 2


def test_replicas_that_can_never_be_placed_are_an_error():
    """On a cluster the run started itself (it cannot grow), asking for GPUs it lacks fails at once, not hangs."""
    from types import SimpleNamespace

    from saferinstruct.llm.base import BackendConfigError
    from saferinstruct.llm.ray_engine import RayPool

    pool = RayPool.__new__(RayPool)
    pool._started = pool._fixed_size = True
    cluster = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    with pytest.raises(BackendConfigError, match=r"2 replicas need 2 x 1 GPU \(the cluster has 0\)"):
        pool._check_resources(cluster, 2, 1.0, 1.0)
    pool._check_resources(cluster, 2, 0.0, 1.0)  # fits: no error


@pytest.mark.parametrize("address", ["auto", "ray://head:10001"])
def test_a_joined_cluster_short_of_resources_only_warns(address, monkeypatch, caplog):
    """A cluster named by address may autoscale: the replicas wait for it, with a warning, not an error."""
    from types import SimpleNamespace

    import saferinstruct.llm.ray_engine as ray_engine

    fake = SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: None,
                           cluster_resources=lambda: {"CPU": 2.0},
                           remote=lambda **kw: lambda cls: SimpleNamespace(remote=lambda *a: object()))
    monkeypatch.setattr(ray_engine, "import_ray", lambda: fake)
    options = SimpleNamespace(ray_address=address, batch_size=4, replica_gpus=lambda: 1.0, num_cpus_per_replica=1.0,
                              replicas=lambda: 2, replica_options=lambda: {})
    with caplog.at_level("WARNING"):
        ray_engine.RayPool("fake", options)
    assert "replicas wait until the cluster grows" in caplog.text
