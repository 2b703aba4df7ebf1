"""The console in a real browser (Selenium + Debian's Chromium, headless) against the embedded
deployment (`make run`'s processes: daphne with the in-process worker), with data made through
the API: a trained run, an evaluation, an image dataset with a split, a volume, a Label Studio
backend and a running task. Checks that charts and pictures are decoded by the browser (not only
that the pages answer 200), that a running task's progress and a run's epochs change on the page
without a reload, and that a project admin sees only their project. Screenshots go to
tests/console/artifacts/ (git-ignored).

Skipped when selenium, chromium or chromedriver is missing (`.ci/run` installs them)."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from bench.deployment import ADMIN_PASSWORD, Deployment, embedded
from tests.training.conftest import image_zip

if os.environ.get("ORCHARD_REQUIRE_BROWSER"):  # CI installs them: missing is a failure there
    import selenium.webdriver as webdriver

    assert shutil.which("chromium") and shutil.which("chromedriver"), "no chromium/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver are not installed"
)
ARTIFACTS = Path(__file__).parent / "artifacts"
PA_PASSWORD = "console-" + secrets.token_hex(8)


class Site(Deployment):
    def api(self, method, path, **kw):
        response = requests.request(
            method, self.url(path), headers=self.headers(), timeout=60, **kw
        )
        assert response.status_code in (200, 201, 202), (path, response.text[:2000])
        return response.json()["data"]

    def wait_task(self, project, task_id, states=("finished",), timeout=120.0, allow_end=False):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.api("GET", f"/api/projects/{project}/tasks/{task_id}")
            if task["state"] in states:
                return task
            assert allow_end or task["state"] not in ("failed", "aborted"), task
            time.sleep(0.2)
        raise AssertionError(f"task {task_id} did not reach {states}")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    extra = dict(
        LOGIN_THROTTLE_RATE="1000/min",
        AUTH_FAILURE_RATE="off",
        TASK_EVENT_INTERVAL_S="0.1",
        TASK_CHECKPOINT_INTERVAL_S="3600",
        TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    workdir = tmp_path_factory.mktemp("console-site")
    with embedded(workdir=workdir, extra_env=extra, cls=Site) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def data(site):
    """Through the API, in the demo project: the studio image dataset with a split, a trained
    run, its evaluation, a volume, a backend; and a second project of a project admin."""
    p = "demo"
    site.api(
        "POST",
        f"/api/datasets/{p}/import/upload",
        files={"file": ("shapes.zip", image_zip(), "application/zip")},
    )
    site.api(
        "POST",
        f"/api/splits/{p}",
        json={"name": "60-20-20", "ratios": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 1},
    )
    exp = site.api(
        "POST",
        f"/api/training/{p}/experiments",
        json={
            "name": "shapes",
            "split_index": 0,
            "architecture": "mlp",
            "epochs": 4,
            "batch_size": 8,
            "devices": ["cpu"],
        },
    )
    runs = []
    for _ in range(2):  # two runs to compare
        started = site.api("POST", f"/api/training/{p}/experiments/{exp['id']}/run")
        run = site.api("GET", f"/api/training/{p}/runs/{started.get('run_id') or started['id']}")
        site.wait_task(p, run["task_id"])
        runs.append(run)
    evaluation = site.api(
        "POST",
        f"/api/evaluation/{p}",
        json={
            "experiment_id": exp["id"],
            "run_id": runs[0]["id"],
            "checkpoint": "best",
            "split_index": 0,
            "split_subset": "all",
            "batch_size": 16,
        },
    )
    evaluation = site.api("GET", f"/api/evaluation/{p}/{evaluation['id']}")
    site.wait_task(p, evaluation["task_id"])
    volume = np.zeros((1, 6, 32, 32), dtype=np.float32)
    volume[0, :, 8:24, 8:24] = np.linspace(0, 1, 16, dtype=np.float32)
    npz = io.BytesIO()
    np.savez(npz, image=volume, label=(volume > 0.4).astype(np.uint8))
    vol = site.api(
        "POST",
        f"/api/projects/{p}/datasets/volume",
        files={"file": ("vol.npz", npz.getvalue(), "application/octet-stream")},
        data={"name": "vol"},
    )
    backend = site.api(
        "POST", f"/api/mlbackend/{p}/backends", json={"name": "ls", "experiment_id": exp["id"]}
    )
    datasets = {d["name"]: d for d in site.api("GET", f"/api/projects/{p}/datasets")["items"]}
    # A project admin of another project.
    site.api("POST", "/api/users", json={"username": "pa", "password": PA_PASSWORD})
    admin_token = site.token
    site.login("pa", PA_PASSWORD)
    other = site.api("POST", "/api/projects", json={"name": "Other team"})
    site.token = admin_token
    return {
        "project": p,
        "experiment": exp,
        "runs": runs,
        "evaluation": evaluation,
        "datasets": datasets,
        "volume": vol,
        "backend": backend,
        "other": other,
    }


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(exist_ok=True)
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1100",
        "--renderer-process-limit=2",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def wait(driver, predicate, timeout=30.0, what="the page"):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: predicate(d), message=f"timed out waiting for {what}"
    )


def log_in(driver, site, username, password):
    driver.delete_all_cookies()
    driver.get(site.url("/admin/login/"))
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait(driver, lambda d: d.find_elements(By.ID, "hosts"), what="the dashboard")


def images_decoded(driver, selector: str, at_least: int = 1) -> int:
    """Waits until every image matching `selector` (at least `at_least`) is decoded by the
    browser with a non-zero size; returns how many there are."""

    def check(d):
        count, ok = d.execute_script(
            "const imgs = [...document.querySelectorAll(arguments[0])];"
            "return [imgs.length, imgs.every(i => i.complete && i.naturalWidth > 0)];",
            selector,
        )
        return count if count >= at_least and ok else False

    return wait(driver, check, what=f"images {selector} to render")


def test_console_pages_render_their_charts_and_pictures(site, data, browser):
    log_in(browser, site, "admin", ADMIN_PASSWORD)
    run = data["runs"][0]
    body = browser.find_element(By.TAG_NAME, "body").text
    assert run["id"] in browser.page_source and "Failed tasks of the last day" in body
    shot(browser, "01-dashboard")

    browser.get(site.url(f"/admin/console/runs/{run['id']}/"))
    assert images_decoded(browser, "img.chart", 2) == 2
    assert browser.find_elements(By.CSS_SELECTOR, "table tbody tr")  # the epochs
    shot(browser, "02-run")

    ids = "&".join(f"runs={r['id']}" for r in data["runs"])
    browser.get(site.url(f"/admin/console/experiments/{data['experiment']['id']}/compare/?{ids}"))
    assert images_decoded(browser, "img.chart", 2) == 2
    shot(browser, "03-compare")

    browser.get(site.url(f"/admin/console/evaluations/{data['evaluation']['id']}/"))
    images_decoded(browser, "#confusion")
    assert browser.find_elements(By.CSS_SELECTOR, "#per-class tbody tr")
    tiles = browser.find_elements(By.CSS_SELECTOR, ".error-tile img")
    if tiles:  # a perfect model has no error to show
        images_decoded(browser, ".error-tile img", len(tiles))
    shot(browser, "04-evaluation")

    images = next(d for d in data["datasets"].values() if d["kind"] == "images")
    browser.get(site.url(f"/admin/console/datasets/{images['id']}/"))
    assert images_decoded(browser, "#items .tile img", 24) == 24
    images_decoded(browser, "#distribution")
    assert browser.find_elements(By.CSS_SELECTOR, ".split")
    shot(browser, "05-image-dataset")
    browser.get(site.url(f"/admin/console/datasets/{images['id']}/?class=dots"))
    assert images_decoded(browser, "#items .tile img", 8) == 8

    digits = data["datasets"]["digits-train"]
    browser.get(site.url(f"/admin/console/datasets/{digits['id']}/"))
    assert images_decoded(browser, "#items .tile img", 48) == 48
    shot(browser, "06-digits")

    browser.get(site.url(f"/admin/console/datasets/{data['volume']['id']}/"))
    assert images_decoded(browser, ".slice img", 4) == 4
    shot(browser, "07-volume")

    browser.get(site.url(f"/admin/console/backends/{data['backend']['id']}/"))
    url = browser.find_element(By.ID, "backend-url").get_attribute("value")
    assert url.endswith(f"/ml/{data['backend']['id']}/")
    browser.find_element(By.ID, "copy-url").click()
    wait(browser, lambda d: "copied" in d.find_element(By.ID, "backend").text, what="copy")
    shot(browser, "08-backend")


def test_a_running_task_and_run_update_without_reload(site, data, browser):
    p = data["project"]
    ds = data["datasets"]
    exp = site.api(
        "POST",
        f"/api/training/{p}/experiments",
        json={
            "name": "long",
            "dataset_id": ds["digits-train"]["id"],
            "val_dataset_id": ds["digits-test"]["id"],
            "architecture": "mlp",
            "epochs": 400,
            "batch_size": 256,
            "devices": ["cpu"],
        },
    )
    started = site.api("POST", f"/api/training/{p}/experiments/{exp['id']}/run")
    run = site.api("GET", f"/api/training/{p}/runs/{started.get('run_id') or started['id']}")
    site.wait_task(p, run["task_id"], states=("active",))
    log_in(browser, site, "admin", ADMIN_PASSWORD)

    # The run page: epochs and curves follow the SSE stream.
    browser.get(site.url(f"/admin/console/runs/{run['id']}/"))
    browser.execute_script("window.__notReloaded = true;")
    wait(
        browser,
        lambda d: d.find_element(By.ID, "run").get_attribute("data-live") == "1",
        what="the run stream",
    )
    first = int(browser.find_element(By.CSS_SELECTOR, '[data-field="epochs_completed"]').text)
    wait(
        browser,
        lambda d: (
            int(d.find_element(By.CSS_SELECTOR, '[data-field="epochs_completed"]').text) > first + 1
        ),
        what="new epochs",
    )
    assert browser.execute_script("return window.__notReloaded === true;")
    images_decoded(browser, "img.chart", 2)
    assert "?v=" in browser.find_element(By.CSS_SELECTOR, "img.chart").get_attribute("src")
    shot(browser, "09-live-run")

    # The task page: progress follows the task websocket.
    browser.get(site.url(f"/admin/console/tasks/{run['task_id']}/"))
    browser.execute_script("window.__notReloaded = true;")
    task = browser.find_element(By.ID, "task")
    # The socket's open flag is not waited for: it may flap while the page reconnects on a busy
    # machine (the page then retries with a fresh token); what the user sees is the progress.
    wait(browser, lambda d: task.get_attribute("data-progress"), 90, what="a progress event")
    seen = set()

    def moved(_driver):
        seen.add(task.get_attribute("data-progress"))
        return len(seen) >= 3  # two changes after the first value

    wait(browser, moved, 90, what="the progress to move")
    assert browser.execute_script("return window.__notReloaded === true;")
    width = browser.find_element(By.CSS_SELECTOR, '[data-field="progress-bar"]').get_attribute(
        "style"
    )
    assert "width" in width
    shot(browser, "10-live-task")

    # Abort from the console: the state turns to aborted on the page (the stop takes effect
    # between two steps, after the page came back), and the retry action appears.
    browser.find_element(By.ID, "abort").click()
    wait(browser, lambda d: "Abort requested" in d.page_source, what="the abort")
    browser.execute_script("window.__notReloaded = true;")
    site.wait_task(p, run["task_id"], states=("aborted",))
    wait(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="state"]').text == "aborted",
        what="the aborted state",
    )
    wait(browser, lambda d: d.find_element(By.ID, "retry").is_displayed(), what="retry")
    shot(browser, "11-aborted-task")
    browser.find_element(By.ID, "retry").click()
    wait(browser, lambda d: "queued again" in d.page_source, what="the retry")
    site.wait_task(p, run["task_id"], states=("queued", "active"))
    site.api("DELETE", f"/api/projects/{p}/tasks/{run['task_id']}")  # abort it again
    site.wait_task(p, run["task_id"], states=("aborted",), allow_end=True)

    # Its best checkpoint evaluated on the digits test set: the worst errors as pictures.
    evaluation = site.api(
        "POST",
        f"/api/evaluation/{p}",
        json={
            "experiment_id": exp["id"],
            "run_id": run["id"],
            "checkpoint": "best",
            "dataset_id": ds["digits-test"]["id"],
            "batch_size": 128,
        },
    )
    evaluation = site.api("GET", f"/api/evaluation/{p}/{evaluation['id']}")
    site.wait_task(p, evaluation["task_id"])
    browser.get(site.url(f"/admin/console/evaluations/{evaluation['id']}/"))
    assert images_decoded(browser, ".error-tile img", 1) >= 1
    assert "predicted:" in browser.find_element(By.ID, "worst-errors").text
    images_decoded(browser, "#confusion")
    browser.execute_script("document.getElementById('worst-errors').scrollIntoView();")
    shot(browser, "12-evaluation-errors")


def test_a_project_admin_sees_only_their_project(site, data, browser):
    log_in(browser, site, "pa", PA_PASSWORD)
    page = browser.page_source
    for run in data["runs"]:
        assert run["id"] not in page
    assert "digits-train" not in page and data["other"]["name"] in page
    shot(browser, "13-project-admin-dashboard")
    browser.get(site.url(f"/admin/console/runs/{data['runs'][0]['id']}/"))
    assert "Not Found" in browser.title or "not found" in browser.page_source.lower()
    browser.get(site.url(f"/admin/console/datasets/{data['datasets']['digits-train']['id']}/"))
    assert "not found" in browser.page_source.lower()
    browser.get(site.url("/admin/?project=demo"))
    assert all(run["id"] not in browser.page_source for run in data["runs"])
