"""ddlib.book: the build's setting for exhibit pages, and the execution-cache refresh."""

from __future__ import annotations

from ddlib import book


def test_setting_prefers_explicit_then_the_build_then_smoke(monkeypatch):
    monkeypatch.delenv(book.PROFILE_VAR, raising=False)
    monkeypatch.delenv(book.DATASETS_VAR, raising=False)
    assert book.setting() == {"profile": "smoke", "dataset": "synthetic"}
    monkeypatch.setenv(book.PROFILE_VAR, "paper")
    monkeypatch.setenv(book.DATASETS_VAR, "cifar100, synthetic")
    assert book.setting() == {"profile": "paper", "dataset": "cifar100"}
    assert book.setting("cpu", "synthetic") == {"profile": "cpu", "dataset": "synthetic"}


def test_cache_is_dropped_only_when_results_or_profile_change(tmp_path):
    build, store = tmp_path / "_build", tmp_path / "results"
    cache = build / ".jupyter_cache"
    key = dict(profile="smoke", datasets="synthetic", results_dir=store)
    assert book.refresh_cache(build, **key)            # first build
    cache.mkdir()
    assert not book.refresh_cache(build, **key) and cache.is_dir()
    (store / "smoke").mkdir(parents=True)
    (store / "smoke" / "run.json").write_text("{}")   # the sweep wrote a result
    assert book.refresh_cache(build, **key) and not cache.exists()
    cache.mkdir()
    assert book.refresh_cache(build, **{**key, "profile": "cpu"}) and not cache.exists()
