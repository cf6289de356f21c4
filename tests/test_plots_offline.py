"""`dvc plots show` renders offline (issue 43): DVC's own page loads Vega from a CDN, and without a network its
charts render as nothing. The project's page (.dvc/plots/offline.html, scripts/vendor_vega.py) inlines the
three libraries, and .dvc/config names it, so a page DVC writes holds no address to load anything from.
(The rendering itself was checked in headless Chromium with the network off: docs/pipeline.md.)"""
from __future__ import annotations

import configparser
import re

from conftest import ROOT

PAGE = ROOT / ".dvc" / "plots" / "offline.html"


def test_dvc_config_names_the_offline_page():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert (ROOT / ".dvc" / config["plots"]["html_template"]) == PAGE


def test_the_page_a_dvc_render_writes_loads_nothing_from_the_network(tmp_path):
    from dvc_render import render_html
    from dvc_render.vega import VegaRenderer

    renderer = VegaRenderer([{"step": 0, "accuracy": 0.5, "rev": "workspace"}], "train/accuracy.tsv",
                            template="linear", x="step", y="accuracy")
    page = render_html([renderer], tmp_path / "index.html", html_template=PAGE).read_text()
    assert "vegaEmbed('#" in page  # the chart is on the page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # and no script comes from anywhere else
    assert "cdn.jsdelivr.net" not in page
    for library in ("vega 5.20.2", "vega-lite 5.2.0", "vega-embed 6.18.2"):  # the versions DVC's page pins
        assert f"<!-- {library} (npm)" in page
    assert page.count("Redistribution and use in source and binary forms") == 3  # each licence kept
