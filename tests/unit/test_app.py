"""The faust app the worker runs: configuration only (nothing connects here)."""

from __future__ import annotations

from pathlib import Path

from streamrec.config import Settings
from streamrec.serving.popularity import PopularityRanker
from streamrec.stream.app import build_app


def test_faust_data_dir_is_under_the_streamrec_home_not_the_working_directory(
    tmp_path: Path,
) -> None:
    home = tmp_path / "odd {name}"  # faust formats the path; braces must survive
    app = build_app(Settings(home=home), PopularityRanker())
    assert Path(app.conf.datadir) == home / "faust" / "streamrec-worker-data"
    assert Path(app.conf.tabledir).is_relative_to(home)
