"""The gallery of a finished smoke run, built and opened from file:// in headless Chromium
(Debian `chromium` + `chromium-driver`, driven by selenium): card count, a filter, console
errors, SMOKE banners, the attention switch, a kept screenshot."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from pipeline.demo import working_dir
from pipeline.gallery.build import build_gallery
from pipeline.gallery.params import GalleryParams
from pipeline.gallery.select import choose
from pipeline.visualize import RunOutputs

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOT_DIR = "VLMSAM_SCREENSHOT_DIR"  # where set, the screenshots are copied there too


@pytest.fixture(scope="module")
def run(tmp_path_factory, finished_smoke_run):
    """A finished smoke run (extract -> sample -> decode) on three synthetic images."""
    root = tmp_path_factory.mktemp("run")
    dataset = finished_smoke_run(root, 3, seed=5, width=200, height=150)
    d = RunOutputs()
    return dataset, RunOutputs(root / d.cache, root / d.points, root / d.visible, root / d.amodal)


@pytest.fixture(scope="module")
def gallery(run, tmp_path_factory):
    dataset, outputs = run
    out = tmp_path_factory.mktemp("reports") / "gallery"
    summary = build_gallery(dataset, outputs, out, GalleryParams(page_size=4))
    return out, summary, dataset


def _card(c, iou, bucket="none", category="a"):
    return {"gt_id": c, "iou_amodal": iou, "iou_visible": iou, "bucket": bucket, "category": category}


def test_choice_is_worst_first_then_stratified_within_the_cap():
    cards = [_card(i, i / 100, bucket=("none", "heavy")[i % 2], category="ab"[i // 50]) for i in range(100)]
    chosen = choose(cards, 10)
    assert len(chosen) == 10 and [c["iou_amodal"] for c in chosen] == sorted(c["iou_amodal"] for c in chosen)
    assert [c["gt_id"] for c in chosen[:5]] == [0, 1, 2, 3, 4]
    rest = chosen[5:]
    assert {(c["bucket"], c["category"]) for c in rest} == {("none", "a"), ("heavy", "a"), ("none", "b"), ("heavy", "b")}
    assert choose(cards, None) == choose(cards, 1000) and len(choose(cards, None)) == 100


def test_gallery_files_and_csv(gallery):
    out, summary, dataset = gallery
    assert summary["smoke"] is True and summary["cards"] == summary["instances"] == dataset.instance_count()
    rows = list(csv.DictReader((out / "gallery.csv").open()))
    assert len(rows) == dataset.instance_count()
    ious = [float(r["iou_amodal"]) for r in rows]
    assert ious == sorted(ious)
    for r in rows:
        assert (out / "cards" / f"{r['gt_id']}.jpg").stat().st_size > 500
        assert (out / "cards" / f"{r['gt_id']}_att.png").exists()
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from a network


def test_cap_keeps_the_full_list_in_the_csv(run, tmp_path):
    dataset, outputs = run
    summary = build_gallery(dataset, outputs, tmp_path / "gallery", GalleryParams(max_cards=2))
    assert summary["cards"] == 2 and summary["instances"] == dataset.instance_count()
    rows = list(csv.DictReader((tmp_path / "gallery" / "gallery.csv").open()))
    assert len(rows) == dataset.instance_count() and sum(r["on_page"] == "True" for r in rows) == 2


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with nothing that reaches a network, its console log kept."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian packages chromium and chromium-driver are not installed (.ci/run installs them)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager downloads nothing
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _keep(driver, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    driver.save_screenshot(str(shot))
    if os.environ.get(SCREENSHOT_DIR):
        Path(os.environ[SCREENSHOT_DIR]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ[SCREENSHOT_DIR]) / name)
    print(f"screenshot: {shot}")
    return shot


def test_gallery_in_chromium(gallery, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out, summary, dataset = gallery
    browser.get((out / "index.html").as_uri())
    n = dataset.instance_count()
    count = browser.find_element(By.ID, "count")
    assert int(count.get_attribute("data-matching")) == n
    shown = browser.find_elements(By.CSS_SELECTOR, ".card[data-gt-id]")
    assert len(shown) == min(4, n)  # one page
    # every page together holds every instance once
    seen = set()
    for _ in range(-(-n // 4)):
        seen |= {int(e.get_attribute("data-gt-id")) for e in browser.find_elements(By.CSS_SELECTOR, ".card")}
        browser.find_element(By.ID, "next").click()
    assert seen == {inst.id for im in dataset.images for inst in im.instances}
    # worst first: the first card is the lowest amodal IoU
    rows = list(csv.DictReader((out / "gallery.csv").open()))
    browser.find_element(By.ID, "prev").click()
    for _ in range(n):
        browser.find_element(By.ID, "prev").click()
    assert browser.find_elements(By.CSS_SELECTOR, ".card")[0].get_attribute("data-gt-id") == rows[0]["gt_id"]
    # SMOKE on the page and on every card
    assert "SMOKE" in browser.find_element(By.ID, "smoke").text
    assert all("SMOKE" in e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card"))
    shot = _keep(browser, tmp_path, "gallery.png")
    assert shot.stat().st_size > 10_000

    # a class filter leaves exactly that class's instances
    category = rows[0]["category"]
    Select(browser.find_element(By.ID, "f-category")).select_by_value(category)
    expected = sum(r["category"] == category for r in rows)
    assert int(count.get_attribute("data-matching")) == expected
    if len({r["category"] for r in rows}) > 1:
        assert expected < n
    assert all(category in e.text for e in browser.find_elements(By.CSS_SELECTOR, ".card"))
    # an IoU range filter
    Select(browser.find_element(By.ID, "f-category")).select_by_value("*")
    threshold = float(rows[len(rows) // 2]["iou_amodal"])
    box = browser.find_element(By.ID, "f-iou-max")
    box.send_keys(f"{threshold}")
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", box)
    assert int(count.get_attribute("data-matching")) == sum(float(r["iou_amodal"]) <= threshold for r in rows)
    # the attention overlay switches off and on
    def overlay_shown() -> bool:
        return browser.find_element(By.CSS_SELECTOR, ".card .att").is_displayed()

    assert overlay_shown()
    browser.find_element(By.ID, "att").click()
    assert not overlay_shown()
    _keep(browser, tmp_path, "gallery_no_attention.png")
    browser.find_element(By.ID, "att").click()
    assert overlay_shown()
    images = browser.find_elements(By.CSS_SELECTOR, ".card img")
    assert all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i) for i in images)
    assert _console_errors(browser) == []


OFFLINE_TEMPLATE = Path(__file__).resolve().parents[1] / ".dvc" / "plots_offline.html"
REPO_PLOT_TEMPLATES = Path(__file__).resolve().parents[1] / ".dvc" / "plots"
# per vega canvas of the page, its pixels of the SMOKE RUN line's red (#b00020)
RED_PIXELS = """return [...document.querySelectorAll('.vega-embed canvas')].map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] > 140 && d[i + 1] < 60 && d[i + 2] < 80 && d[i + 3] > 200) n++;
  return n; });"""


def test_offline_plots_in_chromium(run, browser, tmp_path):
    """`dvc plots show --html-template .dvc/plots_offline.html` renders every vega plot of
    dvc.yaml from file:// with no request to any network and no console error."""
    import subprocess
    import sys

    import yaml
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from stages import evaluate

    if not OFFLINE_TEMPLATE.exists():
        pytest.skip(f"{OFFLINE_TEMPLATE} missing: run scripts/offline_plots_template.sh (.ci/run does)")
    dataset, outputs = run
    root = outputs.cache.parents[1]
    with working_dir(root):
        evaluate.main(["--params", "params.yaml"])
    repo_plots = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["plots"]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"plots": repo_plots}, sort_keys=False))
    dvc = [str(Path(sys.executable).parent / "dvc")]
    if not (root / ".dvc").exists():
        subprocess.run(dvc + ["init", "--no-scm", "-q"], cwd=root, check=True)
    shutil.copytree(REPO_PLOT_TEMPLATES, root / ".dvc" / "plots", dirs_exist_ok=True)
    n_vega = sum(1 for p in repo_plots if Path(next(iter(p))).suffix == ".csv")

    def show(name: str) -> list[int]:
        """Render the plots page, check it stays offline; per vega chart its SMOKE-red pixels."""
        out = tmp_path / name
        subprocess.run(dvc + ["plots", "show", "--html-template", str(OFFLINE_TEMPLATE), "-o", str(out)],
                       cwd=root, check=True, capture_output=True)
        page = (out / "index.html").read_text()
        assert "cdn.jsdelivr" not in page and "<script src=" not in page
        browser.get((out / "index.html").as_uri())
        WebDriverWait(browser, 20).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".vega-embed canvas")) >= n_vega)
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
        assert [r for r in resources if not r.startswith(("file:", "data:"))] == []
        assert _console_errors(browser) == []
        return browser.execute_script(RED_PIXELS)

    assert all(n > 50 for n in show("dvc_plots")), "every vega chart of a smoke run says SMOKE RUN"
    _keep(browser, tmp_path, "plots.png")
    for csv in ("pr_curves.csv", "miou_by_occlusion.csv"):  # the same run, marked as no smoke
        path = root / "reports" / "plots" / csv
        path.write_text(path.read_text().replace(",true\n", ",false\n"))
    assert show("dvc_plots_not_smoke") == [0] * n_vega
