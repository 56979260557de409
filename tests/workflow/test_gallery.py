"""`zsad test` thresholds, raw maps and result gallery, `zsad report --html`, and the page in a real browser.

One tiny-backbone `zsad test` run (untrained static prompts on two synthetic categories) feeds every test here.
The browser test opens the gallery in Debian's headless Chromium; it is skipped, with the reason, where
`chromium` is not installed (CI installs it where apt-get is available).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zsad.cli import main
from zsad.workflow.gallery.run import GalleryImage, badness

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("backbone/tiny.yaml", "method/static.yaml", "data/synthetic.yaml", "trainer/smoke.yaml")
PICTURES_PER_CATEGORY = 4
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def tested_run(tmp_path_factory) -> Path:
    """The ``results.json`` of one `zsad test --results.maps npy --results.html true` run (about 15 s)."""
    work = tmp_path_factory.mktemp("gallery_run")
    configs = [arg for name in CONFIGS for arg in ("-c", str(ROOT / "configs" / name))]
    options = [
        "--untrained=true",
        "--data.init_args.target_categories=[ring, capsule]",
        "--results.maps=npy",
        "--results.html=true",
        f"--results.html_pictures={PICTURES_PER_CATEGORY}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("ZSAD_CACHE_DIR", str(work / "cache"))
        main(["test", *configs, *options])
    results = work / "runs" / "smoke" / "results.json"
    assert results.is_file()
    return results


def test_thresholds_raw_maps_and_figures_of_a_test_run(tested_run):
    document = json.loads(tested_run.read_text())
    thresholds = document["thresholds"]
    assert thresholds["rule"] == "f1" and thresholds["tuned_on_target"]
    assert "tuned on the target set" in thresholds["description"]
    for category in ("ring", "capsule"):
        entry = thresholds["per_category"]["synthetic"][category]
        metrics = document["per_category"]["synthetic"][category]
        assert entry["image"]["f1"] == pytest.approx(metrics["image_f1max"])  # the F1-optimal threshold's F1
        assert entry["pixel"]["f1"] == pytest.approx(metrics["pixel_f1max"])
    folder = tested_run.parent
    scores = (folder / "scores.csv").read_text().splitlines()[1:]
    maps = sorted((folder / "maps").rglob("*.npy"))
    assert len(maps) == len(scores) > 0  # every test image once, named after it
    assert np.load(maps[0]).shape == (64, 64) and np.load(maps[0]).dtype == np.float32
    assert json.loads((folder / "maps" / "maps.json").read_text())["resolution"] == "eval"
    figures = sorted((folder / "pictures").rglob("*.png"))
    assert len(figures) == 2 * PICTURES_PER_CATEGORY
    scales = {(Image.open(f).info["zsad:scale_low"], Image.open(f).info["zsad:scale_high"]) for f in figures}
    ranges = document["map_ranges"]["synthetic"]
    run_range = (min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values()))
    assert len(scales) == 1 and tuple(map(float, scales.pop())) == pytest.approx(run_range)  # one scale per run
    pixel_thresholds = {
        Image.open(f).info["zsad:category"]: Image.open(f).info["zsad:pixel_threshold"] for f in figures
    }
    assert float(pixel_thresholds["ring"]) == thresholds["per_category"]["synthetic"]["ring"]["pixel"]["threshold"]


def panels(html: str) -> list[str]:
    return re.findall(r"<figure [^>]*class=\"panel\"[^>]*>", html)


def test_gallery_is_self_contained_and_worst_first(tested_run):
    html = (tested_run.parent / "gallery.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no asset from another host
    assert html.count('src="data:image/jpeg;base64,') == len(panels(html)) == 2 * PICTURES_PER_CATEGORY
    outcomes = [re.search(r'data-outcome="(\w*)"', tag).group(1) for tag in panels(html)]
    errors = [o in ("FP", "FN") for o in outcomes]
    assert errors == sorted(errors, reverse=True)  # false positives and negatives first
    assert "tuned on the target set" in html and html.count("<svg") == 2 * 2  # ROC and PR per category
    for heading in ("Metrics per category", "Image-level ROC and PR curves", "Images, worst first"):
        assert heading in html


def test_report_html_writes_a_page_per_run_and_an_index(tested_run, tmp_path, run_cli):
    code, output = run_cli(["report", str(tested_run), "--html", str(tmp_path / "galleries")])
    assert code == 0, output
    pages = sorted(p.name for p in (tmp_path / "galleries").glob("*.html"))
    assert len(pages) == 2 and "index.html" in pages
    page = next(p for p in (tmp_path / "galleries").glob("*.html") if p.name != "index.html")
    assert len(panels(page.read_text())) == 2 * PICTURES_PER_CATEGORY  # the figures found under pictures/
    assert page.name in (tmp_path / "galleries" / "index.html").read_text()


def chromium(page: Path, profile: Path, *options: str, fragment: str = "") -> subprocess.CompletedProcess:
    """Headless Chromium as root can run it: no sandbox, no GPU, no network services, a throwaway profile."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *options,
        page.resolve().as_uri() + fragment,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_gallery_renders_in_headless_chromium(tested_run, tmp_path):
    page = tested_run.parent / "gallery.html"
    rendered = chromium(page, tmp_path / "profile", "--dump-dom")
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    console = [line for line in rendered.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # the page logs nothing: any console line is an error or a warning
    dom = rendered.stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-ready="1"' in body and "data-errors" not in body  # the script ran to its end without errors
    assert len(panels(dom)) == 2 * PICTURES_PER_CATEGORY
    assert f'<b id="shown">{2 * PICTURES_PER_CATEGORY}</b>' in dom

    filtered = chromium(page, tmp_path / "profile", "--dump-dom", fragment="#category=synthetic%2Fring")
    tags = panels(filtered.stdout)
    hidden = [tag for tag in tags if "hidden" in tag]
    assert len(hidden) == PICTURES_PER_CATEGORY and all("synthetic/capsule" in tag for tag in hidden)
    assert f'<b id="shown">{PICTURES_PER_CATEGORY}</b>' in filtered.stdout

    screenshot = tmp_path / "gallery.png"
    shot = chromium(page, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000")
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 20  # a rendered page, not a blank one
    assert (pixels[:60] == (0x20, 0x30, 0x4A)).all(axis=-1).mean() > 0.5  # the header band is drawn


def test_thresholds_from_another_run(tested_run, tmp_path):
    """A second test takes the first run's thresholds (`from_run`); the same test images: tuned on the target set."""
    configs = [arg for name in CONFIGS for arg in ("-c", str(ROOT / "configs" / name))]
    options = [
        "--untrained=true",
        "--data.init_args.target_categories=[ring, capsule]",
        "--results.threshold_rule=from_run",
        f"--results.thresholds_from={tested_run}",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        patch.setenv("ZSAD_CACHE_DIR", str(tested_run.parents[2] / "cache"))
        main(["test", *configs, *options])
    first = json.loads(tested_run.read_text())["thresholds"]
    second = json.loads((tmp_path / "runs" / "smoke" / "results.json").read_text())["thresholds"]
    assert second["rule"] == "from_run" and second["source"] == str(tested_run) and second["tuned_on_target"]
    for category in ("ring", "capsule"):
        for level in ("image", "pixel"):
            before = first["per_category"]["synthetic"][category][level]
            after = second["per_category"]["synthetic"][category][level]
            assert after == pytest.approx(before)  # same model, same images, same thresholds: the same numbers


def test_an_image_scoring_exactly_the_threshold_is_predicted_anomalous():
    score = float(np.float32(0.024941234))  # a float32 score, as the threshold sweep returns it
    from_csv = float(f"{score:.9g}")  # scores.csv keeps 9 digits: the same float32, another float64
    image = GalleryImage("d", "c", "a.png", "crack", 1, from_csv, Path("a.png"), threshold=score)
    assert image.outcome == "TP"
    assert badness(0.5, 0, np.array([0.2, 0.5, 0.9]), np.array([1, 1, 1])) == pytest.approx(2 / 3)
