"""Sphinx side of the book build: say which profile built the book, and warn on every page
of a `smoke` build that its numbers mean nothing.

`make book` exports the profile and datasets (DDBOOK_PROFILE, DDBOOK_DATASETS, the names
`ddlib.book` reads) for the exhibit pages; without them the pages show `smoke`, and so does
this. Three things follow from it:

- the substitutions `{{ build_profile }}`, `{{ build_datasets }}` and
  `{{ build_profile_means }}` for the intro's prose;
- a `<meta name="ddbook-profile">` tag on every page (tests/check_book.py reads it);
- in a smoke build, the theme's announcement banner on every page.

Kept free of `ddlib` imports: Sphinx loads it before any notebook runs.
"""

from __future__ import annotations

import html
import os

PROFILE_VAR, DATASETS_VAR = "DDBOOK_PROFILE", "DDBOOK_DATASETS"  # as in ddlib.book
PROFILE_MEANS = {
    "smoke": "seconds-long runs on tiny data that only check the code runs: their numbers "
             "mean nothing",
    "cpu": "runs trimmed to fit a CPU, on smaller data and with fewer epochs than the paper",
    "paper": "the paper's settings",
}
SMOKE_BANNER = ("<strong>Smoke build:</strong> every number and figure in this book comes "
                "from seconds-long runs on tiny data; they mean nothing. A plain "
                "<strong>make book</strong> builds the real one.")


def build_setting() -> tuple[str, list[str]]:
    """(profile, datasets) of this build, with the exhibit pages' fallbacks."""
    profile = os.environ.get(PROFILE_VAR) or "smoke"
    datasets = [d.strip() for d in os.environ.get(DATASETS_VAR, "").split(",") if d.strip()]
    return profile, datasets or ["synthetic"]


def _config_inited(app, config) -> None:
    profile, datasets = build_setting()
    config.myst_substitutions = {
        **config.myst_substitutions, "build_profile": profile,
        "build_datasets": ", ".join(datasets),
        "build_profile_means": PROFILE_MEANS.get(profile, "a profile of its own")}
    if profile == "smoke":
        config.html_theme_options = {**config.html_theme_options,
                                     "announcement": SMOKE_BANNER}


def _page_context(app, pagename, templatename, context, doctree) -> None:
    profile = html.escape(build_setting()[0], quote=True)
    context["metatags"] = (context.get("metatags", "")
                           + f'\n<meta name="ddbook-profile" content="{profile}" />')


def setup(app):
    app.connect("config-inited", _config_inited)
    app.connect("html-page-context", _page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
