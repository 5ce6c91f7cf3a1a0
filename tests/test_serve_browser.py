"""`serve` end to end in a real headless Chromium, driven by Selenium.

The command runs as a user starts it, on a generated video of three garments
the test model tells apart; the browser opens the page and must see the
video, the region of interest, the model input and the label change as the
garment changes. Clicking a class button must leave that frame's region of
interest in the collect directory; with --own, the button also counts it as
an own photo, and 'forget' sets the class's photos aside. A screenshot of the page is kept
(SERVE_SCREENSHOT=docs/serve.png writes it there too).

Needs Debian's chromium and chromium-driver (.ci/run installs them) and
selenium (the dev extras); skipped with the install command when absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime import frames
from edge_runtime.classifier import Classifier
from edge_runtime.frames import RoiSpec

from test_serve import photo_like, start_cli, local_url, write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium (or: pip install -e '.[dev]')"

try:
    import selenium  # noqa: F401
except ImportError:
    selenium = None

pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None or selenium is None,
                                reason=f"needs Chromium, chromedriver and selenium: {INSTALL}")

FPS, SECONDS_EACH = 10.0, 2  # each garment stays 2 s: long enough to be seen, short enough to wait for


@pytest.fixture(scope="module")
def garments(tiny_int8_model, fashion) -> list[tuple[np.ndarray, str]]:
    """Three frames the test model labels confidently and differently, with those labels."""
    classifier = Classifier(tiny_int8_model, threshold=None)
    chosen, seen = [], set()
    for i in range(200):
        frame = photo_like(fashion.test_images[i])
        result = next(frames.classify_frames([frame], classifier, RoiSpec("center"))).result
        if not result.is_unknown and result.best.score > 0.6 and result.label not in seen:
            chosen.append((frame, result.label))
            seen.add(result.label)
        if len(chosen) == 3:
            return chosen
    pytest.fail(f"the test model is confident about fewer than 3 classes: {seen}")


@pytest.fixture(scope="module")
def garment_video(garments, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "three-garments.avi"
    return write_video(path, [frame for frame, _ in garments], fps=FPS, repeat=int(FPS * SECONDS_EACH))


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,860"):
        options.add_argument(flag)
    options.page_load_strategy = "eager"  # the video never "finishes loading"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s: {what}")


def test_page_shows_the_camera_labels_change_and_a_button_saves_the_frame(garments, garment_video, tiny_int8_model,
                                                                          browser, tmp_path):
    from selenium.webdriver.common.by import By

    collect = tmp_path / "collect"
    proc, banner = start_cli(str(garment_video), "--port", "0", "--model", str(tiny_int8_model),
                             "--collect", str(collect))
    try:
        url = local_url(banner)
        browser.get(url)
        js = browser.execute_script
        expected = {label for _, label in garments}

        # The live parts: video frames, the ROI box, the model input, fps.
        wait_until(lambda: js("return document.getElementById('video').naturalWidth") == 640, 20, "video frames")
        wait_until(lambda: browser.find_element(By.ID, "roi").is_displayed(), 10, "the ROI box")
        wait_until(lambda: js("return document.getElementById('input').naturalWidth") == 28, 10, "the model input")
        roi = browser.find_element(By.ID, "roi")
        assert roi.value_of_css_property("left").endswith("px") and roi.size["width"] > 100
        assert "fps" in browser.find_element(By.ID, "stats").text
        assert len(browser.find_elements(By.CSS_SELECTOR, "#topk .row")) == 3
        model = browser.find_element(By.ID, "model").text
        assert "fashion_mnist_int8.tflite" in model and "test accuracy" in model

        # The label follows the garment: every one of the three is seen, and nothing else.
        seen, labels_seen_in_order = set(), []
        deadline = time.monotonic() + 3 * len(garments) * SECONDS_EACH + 10
        while seen != expected and time.monotonic() < deadline:
            label = browser.find_element(By.ID, "label").text
            if label not in ("…", "") and (not labels_seen_in_order or labels_seen_in_order[-1] != label):
                labels_seen_in_order.append(label)
            seen.add(label)
            seen.discard("…")
            time.sleep(0.1)
        assert seen == expected, f"labels seen in order: {labels_seen_in_order}, expected {expected}"
        assert len(labels_seen_in_order) >= 3  # it changed at least twice, live, without a reload

        # One button per class and one for none; clicking saves that frame.
        buttons = browser.find_elements(By.CSS_SELECTOR, "#buttons button.label")
        assert [b.get_attribute("data-label") for b in buttons][-1] == "none" and len(buttons) == 11
        current = browser.find_element(By.ID, "label").text
        target = current if current in expected else sorted(expected)[0]
        button = next(b for b in buttons if b.get_attribute("data-label") == target)
        button.click()
        status = wait_until(lambda: browser.find_element(By.ID, "status").text.startswith("saved ")
                            and browser.find_element(By.ID, "status").text, 10, "the saved message")
        saved = collect / status.split()[1]
        assert saved.is_file() and saved.parent.name == target.replace("/", "_")
        image = cv2.imread(str(saved))
        assert image.shape == (288, 288, 3)  # the region of interest, not the whole frame
        assert button.text.endswith("1 saved")

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        shot = tmp_path / "serve.png"
        browser.save_screenshot(str(shot))
        assert cv2.imread(str(shot)).shape[1] >= 1000
        if os.environ.get("SERVE_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["SERVE_SCREENSHOT"])
    finally:
        err = stop(proc)
    assert proc.returncode == 0 and "stopped (SIGTERM)" in err and "Traceback" not in err


def stop(proc) -> str:
    """SIGTERM a serve started by start_cli, as systemd stops it; its stderr once it has exited."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)[1]
    finally:
        proc.kill()


def test_own_photos_counted_on_the_buttons_and_forgotten(garments, garment_video, tiny_int8_model, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from selenium.webdriver.support import expected_conditions

    own = tmp_path / "own"
    proc, banner = start_cli(str(garment_video), "--port", "0", "--model", str(tiny_int8_model), "--own", str(own))
    try:
        browser.get(local_url(banner))
        js = browser.execute_script
        wait_until(lambda: js("return document.getElementById('input').naturalWidth") == 28, 20, "a first frame")

        def cell(label: str):
            return next(c for c in browser.find_elements(By.CSS_SELECTOR, "#buttons .cls")
                        if c.get_attribute("data-label") == label)
        target = garments[0][1]
        button = cell(target).find_element(By.CSS_SELECTOR, "button.label")
        forget = cell(target).find_element(By.CSS_SELECTOR, "button.forget")
        wait_until(lambda: button.text.endswith("0 saved · 0 own"), 10, "the counts from /api/info")
        assert not forget.is_displayed()  # nothing to forget yet
        assert "own photos" in browser.find_element(By.ID, "collect-note").text

        for n in (1, 2):
            button.click()
            wait_until(lambda: button.text.endswith(f"{n} saved · {n} own"), 10, f"the count after click {n}")
        assert "2 own photos of " + target in browser.find_element(By.ID, "status").text
        assert forget.is_displayed()
        folder = own / target.replace("/", "_")
        assert len(list(folder.glob("*.jpg"))) == 2 and (own / "imprint.json").is_file()

        forget.click()
        WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
        browser.switch_to.alert.accept()  # "Forget your own photos of ...?"
        wait_until(lambda: button.text.endswith("0 saved · 0 own"), 10, "the count after forget")
        assert browser.find_element(By.ID, "status").text.startswith(f"forgot 2 own photos of {target}")
        assert not forget.is_displayed() and not folder.exists()
        assert len(list((own / ".forgotten").glob(f"*/{folder.name}/*.jpg"))) == 2  # set aside, not deleted

        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        err = stop(proc)
    assert proc.returncode == 0 and "Traceback" not in err
    assert "own photos: 0 in 0 classes" in err and err.count("saved ") == 2 and "forgot 2 own photos" in err
