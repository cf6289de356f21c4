"""Write .dvc/plots/offline.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined, so that `dvc plots
show` / `diff` render every chart with no network (issue 43; DVC's own page loads them from a CDN, and offline
its charts render as nothing, without a word).

The versions are the ones DVC's renderer pins (dvc_render/vega.py `SCRIPTS`: vega 5.20.2, vega-lite 5.2.0,
vega-embed 6.18.2); the files are the npm packages' `build/*.min.js`, each under its BSD-3-Clause licence, whose
text is kept beside it in the page. `.dvc/config` names the page (`plots.html_template`).

    cd /tmp && npm pack vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2   # the registry is reachable here
    for f in vega-*.tgz; do mkdir -p "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}" --strip-components 1; done
    python scripts/vendor_vega.py /tmp
"""
from __future__ import annotations

import argparse
from pathlib import Path

PACKAGES = (("vega", "5.20.2", "build/vega.min.js"), ("vega-lite", "5.2.0", "build/vega-lite.min.js"),
            ("vega-embed", "6.18.2", "build/vega-embed.min.js"))
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"
# DVC's page (dvc_render/html.py PAGE_HTML) with the scripts inline instead of its {scripts} (the CDN tags)
HEAD = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
    <meta charset="utf-8">
"""
TAIL = """    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def script(folder: Path, name: str, version: str, build: str) -> str:
    package = folder / f"{name}-{version}"
    licence = (package / "LICENSE").read_text(encoding="utf-8").strip().replace("*/", "* /")
    code = (package / build).read_text(encoding="utf-8")
    if "</script" in code.lower():
        raise SystemExit(f"{name}: its code holds '</script', which would end the inline tag")
    return f"    <!-- {name} {version} (npm), {build} -->\n    <script>/*\n{licence}\n*/\n{code}\n    </script>\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("folder", type=Path, help="the folder holding the unpacked <name>-<version>/ packages")
    args = parser.parse_args()
    page = HEAD + "".join(script(args.folder, *package) for package in PACKAGES) + TAIL
    OUT.write_text(page, encoding="utf-8")
    print(f"{OUT}: {len(page.encode()):,} bytes")


if __name__ == "__main__":
    main()
