"""The command line: `python -m ddlib book-cache` (a step of `make book`)."""

from __future__ import annotations

from ddlib import book_cache
from ddlib.__main__ import main


def test_cache_is_dropped_only_when_results_or_profile_change(tmp_path):
    build, store = tmp_path / "_build", tmp_path / "results"
    cache = build / ".jupyter_cache"
    key = dict(profile="smoke", datasets="synthetic", results_dir=store)
    assert book_cache.refresh_cache(build, **key)            # first build
    cache.mkdir()
    assert not book_cache.refresh_cache(build, **key) and cache.is_dir()
    (store / "smoke").mkdir(parents=True)
    (store / "smoke" / "run.json").write_text("{}")   # the sweep wrote a result
    assert book_cache.refresh_cache(build, **key) and not cache.exists()
    cache.mkdir()
    assert book_cache.refresh_cache(build, **{**key, "profile": "cpu"}) and not cache.exists()


def test_book_cache_subcommand(tmp_path, capsys):
    argv = ["book-cache", "--profile", "smoke", "--results-dir", str(tmp_path / "results"),
            "--build-dir", str(tmp_path / "_build")]
    assert main(argv) == 0 and "cleared" in capsys.readouterr().out
    (tmp_path / "_build" / ".jupyter_cache").mkdir()
    assert main(argv) == 0 and "kept" in capsys.readouterr().out
    assert (tmp_path / "_build" / ".jupyter_cache").is_dir()
