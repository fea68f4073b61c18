"""The documentation site builds, strictly: every page, picture and API entry resolves.

Needs the `docs` extra (mkdocs, mkdocstrings[python]); CI installs it, so a missing
mkdocs fails here rather than being skipped.
"""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            os.path.join(ROOT, "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    for page in (
        "index.html",
        "how-it-works/index.html",
        "api/index.html",
        "reproduction/index.html",
        "volumes/index.html",
    ):
        assert (site / page).exists(), page
    api = (site / "api" / "index.html").read_text()
    for name in (
        "SpatialTransformer",
        "affine_grid",
        "tps_grid",
        "distorted_mnist",
        "TransformerSnapshots",
        "DepthProjection",
        "project_depth",
        "Affine3D",
    ):
        assert name in api, name
    # The pictures the pages show are in the site.
    how = (site / "how-it-works" / "index.html").read_text()
    for picture in ("three-parts-grid.png", "families-grid.png", "variants.png"):
        assert picture in how and (site / "img" / picture).exists(), picture
    volumes = (site / "volumes" / "index.html").read_text()
    assert "volumes-mnist3d-views.png" in volumes
    assert (site / "img" / "volumes-mnist3d-views.png").exists()
