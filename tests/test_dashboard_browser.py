"""The dashboard in a real browser (headless Chromium through Selenium and /usr/bin/chromedriver):
the charts of a finished run with the right number of points, a run written by a background
process growing without a reload, a malformed line and a deleted run shown as messages, a huge
run drawn downsampled. Skipped where Chromium or Selenium is missing, failed instead under
NNSCRATCH_REQUIRE_OPTIONAL=1 (.ci/run installs Debian's chromium and chromium-driver)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard_helpers import staging_of, write_huge_run, write_run
from helpers import cli_env, optional_import

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium, quit (with its processes) at the end whatever happens."""
    optional_import("plotly")
    webdriver = optional_import("selenium.webdriver")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "Chromium and chromedriver needed: apt-get install chromium chromium-driver"
        if os.environ.get("NNSCRATCH_REQUIRE_OPTIONAL", "") not in ("", "0"):
            pytest.fail(message + " (NNSCRATCH_REQUIRE_OPTIONAL=1)")
        pytest.skip(message)
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1300,1400", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_script_timeout(20)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A dashboard server over a runs folder (a finished comparison, a huge run), and the folder."""
    from nnscratch.dashboard.server import make_server, serve_in_background

    runs = tmp_path_factory.mktemp("browser") / "runs"
    write_run(runs / "finished", epochs=3, steps_per_epoch=40)
    write_huge_run(runs / "huge")
    os.utime(runs / "huge" / "metrics.jsonl", (1, 1))  # the oldest: listed last
    server = make_server(runs, "127.0.0.1", 0)
    serve_in_background(server)
    yield server.url, runs
    server.shutdown()
    server.server_close()


def wait_for(driver, script, timeout=15.0, what=""):
    """Poll ``script`` (a JS expression) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or script} (last value {value!r})")


def trace_lengths(driver, chart):
    return driver.execute_script(
        "const el = document.getElementById(arguments[0]);"
        "return el && el.data ? Object.fromEntries(el.data.map(t => [t.name, t.x.length])) : {};", chart)


def open_run(driver, url, run_id):
    driver.get(f"{url}#run={run_id}")
    wait_for(driver, f"window.nnscratchDashboard && window.nnscratchDashboard.view && "
                     f"window.nnscratchDashboard.view.id === {json.dumps(run_id)} && "
                     f"document.getElementById('chart-main').data", what=f"the charts of {run_id}")


def test_a_finished_run_is_drawn_with_every_point(browser, site, tmp_path):
    url, runs = site
    open_run(browser, url, "finished")
    main = trace_lengths(browser, "chart-main")
    assert main["numpy loss (raw)"] == main["torch loss (raw)"] == 120  # 3 epochs of 40 steps, all shown
    assert main["numpy loss"] == 120 and main["numpy val accuracy"] == main["torch val accuracy"] == 3
    assert trace_lengths(browser, "chart-divergence") == {"|loss numpy − loss torch|": 120}
    assert trace_lengths(browser, "chart-lr") == {"numpy lr": 120, "torch lr": 120}
    assert trace_lengths(browser, "chart-grad") == {f"{e} {p}": 3 for e in ("numpy", "torch") for p in ("0.weight", "0.bias")}
    # plotly drew them: an SVG trace each, the accuracy markers, a second y axis
    assert len(browser.find_elements("css selector", "#chart-main .scatterlayer .trace")) == 6
    assert len(browser.find_elements("css selector", "#chart-main .scatterlayer .point")) == 6  # 3 epochs x 2
    assert browser.find_elements("css selector", "#chart-main .y2tick")
    listed = browser.find_element("css selector", "#runs li.selected").text
    assert "finished" in listed and "best val acc 80.00 %" in listed
    wait_for(browser, "document.querySelector('#figures img') && document.querySelector('#figures img').naturalWidth",
             what="the figure")
    # smoothing is adjustable: the smoothed trace changes, the raw one does not
    before = browser.execute_script("return document.getElementById('chart-main').data[1].y.slice(0, 20)")
    browser.execute_script("const s = document.getElementById('smoothing'); s.value = '0.95';"
                           "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'));")
    wait_for(browser, "window.nnscratchDashboard.view.smoothing === 0.95", what="the new smoothing")
    after = browser.execute_script("return document.getElementById('chart-main').data[1].y.slice(0, 20)")
    assert after[0] == before[0] and after[19] > before[19]  # debiased: same first value, lags the fall
    # another run overlaid on the same charts
    browser.find_elements("css selector", "#runs li input[type=checkbox]")[1].click()
    wait_for(browser, "document.getElementById('chart-main').data.some(t => t.name === 'huge numpy loss')",
             what="the overlaid run")
    browser.save_screenshot(str(tmp_path / "finished.png"))
    assert (tmp_path / "finished.png").read_bytes().startswith(b"\x89PNG")


def test_a_huge_run_is_drawn_downsampled(browser, site):
    url, _ = site
    open_run(browser, url, "huge")
    raw = browser.execute_script("const t = document.getElementById('chart-main').data[0]; return [t.x.length, Math.max(...t.y)]")
    assert raw[0] <= 4000 and raw[1] == 9.0  # 100,000 steps drawn as a few thousand points, the spike kept


WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from dashboard_helpers import CONFIG, epoch_events
from nnscratch.training.events import RunStart
from nnscratch.training.sinks import JsonlWriter
writer = JsonlWriter(Path(sys.argv[1]) / "metrics.jsonl", flush_s=0.0)
for engine in ("numpy", "torch"):
    writer(RunStart(engine, CONFIG, 3, 20, 32, 640))
for epoch in (1, 2):
    for engine in ("numpy", "torch"):
        for event in epoch_events(engine, epoch, 20):
            writer(event)
        time.sleep(0.4)
writer.close()
print("written", flush=True)
time.sleep(120)
"""


def test_a_live_run_grows_without_a_reload_and_failures_are_messages(browser, site, tmp_path):
    url, runs = site
    staging = staging_of(runs, "live")  # its lock names the writer below once it runs
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(staging), str(Path(__file__).parent)],
                              env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        (runs / ".live.nnscratch-lock").write_text(f"{writer.pid}\n")
        run_id = staging.name
        wait_for(browser, "true")
        (staging / "metrics.jsonl").touch()
        open_run(browser, url, run_id)
        browser.execute_script("window.notReloaded = true")
        assert "running" in browser.find_element("id", "run-title").text
        seen = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the curves grow while the writer writes
            seen.add(trace_lengths(browser, "chart-main").get("numpy loss (raw)", 0))
            if 40 in seen:
                break
            time.sleep(0.1)
        assert 40 in seen and len(seen) >= 2, seen
        assert writer.stdout.readline() == "written\n"
        wait_for(browser, "document.getElementById('chart-main').data.find(t => t.name === 'torch loss (raw)').x.length === 40",
                 what="torch's 40 steps")
        # a line appended to metrics.jsonl appears without a reload
        with open(staging / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"kind": "steps", "engine": "numpy", "first_step": 41, "loss": [0.5] * 7,
                                "lr": [0.01] * 7}) + "\n")
        wait_for(browser, "document.getElementById('chart-main').data[0].x.length === 47", what="the appended steps")
        assert browser.execute_script("return document.getElementById('chart-divergence').data[0].x.length") == 40
        # a malformed line: a warning on the run, the charts stay
        with open(staging / "metrics.jsonl", "a") as f:
            f.write('{"kind": "steps", "engine": BROKEN\n')
        warning = wait_for(browser, "!document.getElementById('warnings').hidden && document.getElementById('warnings').innerText",
                           what="the warning")
        assert "1 problem(s)" in warning and "not JSON" in warning
        assert trace_lengths(browser, "chart-main")["numpy loss (raw)"] == 47
        browser.save_screenshot(str(tmp_path / "live.png"))
        # the run deleted: a message, no crash, the page still there
        writer.kill()
        writer.wait(timeout=10)
        shutil.rmtree(staging)
        (runs / ".live.nnscratch-lock").unlink()
        message = wait_for(browser, "!document.getElementById('message').hidden && document.getElementById('message').innerText",
                           what="the deleted-run message")
        assert "gone" in message
        assert browser.execute_script("return window.notReloaded === true")
        assert trace_lengths(browser, "chart-main")["numpy loss (raw)"] == 47  # what was read stays drawn
        wait_for(browser, "!Array.from(document.querySelectorAll('#runs li')).some(li => li.dataset.id.includes('live'))",
                 what="the run to leave the list")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE" and "404" not in e["message"]]
        assert not errors, errors
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)
        writer.stdout.close()
