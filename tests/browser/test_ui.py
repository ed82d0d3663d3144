"""The page of builds (`/imagefactory/ui/`) in a real headless Chromium against the real
daemon with the mock plugins: it lists what exists, moves live with the event stream,
shows failures with their console log, validates before it submits, deletes, and signs
its requests when OAuth is on.

Run: `$IMAGEFACTORY_SERVICES/browser/bin/pytest tests/browser` (scripts/test.sh does).
"""

import re
import time
import urllib.request

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import MOCK_TDL, OAUTH_KEY, OAUTH_SECRET, TARGET


def open_page(browser, daemon):
    browser.get(daemon.url + "/imagefactory/ui/")
    WebDriverWait(browser, 20).until(lambda b: b.find_element(By.ID, "live").text == "live")


def row(browser, image_id):
    rows = browser.find_elements(By.CSS_SELECTOR, f'.row[data-id="{image_id}"]')
    return rows[0] if rows else None


def wait_row(browser, image_id, status=None, timeout=30):
    def ready(b):
        r = row(b, image_id)
        return r if r is not None and (status is None or r.get_attribute("data-status") == status) else None

    # A row's content is rebuilt when its image changes: look again when it was.
    return WebDriverWait(browser, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(ready)


def set_field(browser, element_id, text):
    """Sets a textarea the way typing would (an input event follows)."""
    browser.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input', {bubbles: true}));",
        element_id, text)


def test_the_page_lists_existing_images_as_a_tree(daemon, browser):
    base = daemon.build_base()
    daemon.wait(base)
    status, answer = daemon.api("POST", "/target_images", {"target_image": {"base_image_id": base, "target": "mock"}})
    assert status == 202, answer
    target = answer["target_image"]["id"]
    daemon.wait(target, collection="target_images")
    other = daemon.build_base()
    daemon.wait(other)

    open_page(browser, daemon)
    for image_id in (base, target, other):
        wait_row(browser, image_id, "COMPLETE")
    ids = [r.get_attribute("data-id") for r in browser.find_elements(By.CSS_SELECTOR, ".row")]
    assert ids.index(target) == ids.index(base) + 1, f"the target is not listed under its base: {ids}"
    assert "depth-1" in row(browser, target).get_attribute("class")
    assert "depth-0" in row(browser, base).get_attribute("class")


def test_a_build_started_from_the_page_moves_live_to_complete(daemon, browser):
    open_page(browser, daemon)
    browser.execute_script("window.__notReloaded = true;")
    set_field(browser, "template", MOCK_TDL)
    set_field(browser, "parameters", '{"mock_sleep_seconds": 4, "mock_progress_steps": 8}')
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "build").is_enabled())
    browser.find_element(By.ID, "build").click()
    started = WebDriverWait(browser, 10).until(
        lambda b: re.search(r"Started ([0-9a-f-]{36})", b.find_element(By.ID, "build-result").text))
    image_id = started.group(1)

    seen_status, seen_percent = [], []
    deadline = time.time() + 60
    while time.time() < deadline:
        r = row(browser, image_id)
        try:
            if r is not None:
                status = r.get_attribute("data-status")
                seen_percent.append(int(r.find_element(By.TAG_NAME, "progress").get_attribute("value")))
                seen_status.append(status)
                if status in ("COMPLETE", "FAILED"):
                    break
        except StaleElementReferenceException:
            pass
        time.sleep(0.1)
    assert seen_status and seen_status[-1] == "COMPLETE", seen_status
    assert "BUILDING" in seen_status, f"the row never showed BUILDING: {set(seen_status)}"
    assert any(0 < p < 100 for p in seen_percent), f"the progress bar never moved: {sorted(set(seen_percent))}"
    assert seen_percent[-1] == 100
    assert browser.execute_script("return window.__notReloaded === true;"), "the page reloaded"
    # The record the page shows has the root password redacted.
    row(browser, image_id).click()
    WebDriverWait(browser, 10).until(lambda b: "REDACTED" in b.find_element(By.ID, "detail-template").text)
    assert "ui-test-password" not in browser.page_source


def test_a_failing_build_shows_its_one_line_error_and_its_console_log(daemon, browser):
    image_id = daemon.build_base({"mock_fail_at": "create_base_image", "mock_keep_file": "console.log"})
    daemon.wait(image_id)
    open_page(browser, daemon)
    r = wait_row(browser, image_id, "FAILED")
    error = r.find_element(By.CSS_SELECTOR, ".error").text
    assert "told to fail" in error and "\n" not in error, error
    link = r.find_element(By.CSS_SELECTOR, "a.console-link")
    href = link.get_attribute("href")
    with urllib.request.urlopen(href, timeout=10) as answer:
        assert answer.status == 200
        assert b"create_base_image of MockOS" in answer.read()
    link.click()
    WebDriverWait(browser, 10).until(
        lambda b: "create_base_image of MockOS" in b.find_element(By.ID, "file-text").text)


def test_an_invalid_template_shows_line_numbered_errors_and_submits_nothing(daemon, browser):
    open_page(browser, daemon)
    set_field(browser, "template", "<template>\n  <name>broken</name>\n  <os>\n    <name>MockOS_A</name>\n  </os>\n</template>\n")
    errors = WebDriverWait(browser, 10).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#validation li.validation-error"))
    texts = [e.text for e in errors]
    assert all(re.search(r"\bline \d+", t) for t in texts), texts
    button = browser.find_element(By.ID, "build")
    assert not button.is_enabled()
    browser.execute_script("document.getElementById('build').click();")
    time.sleep(1)
    status, answer = daemon.api("GET", "/base_images")
    assert status == 200 and answer["base_images"] == [], answer


def test_delete_removes_the_row(daemon, browser):
    image_id = daemon.build_base()
    daemon.wait(image_id)
    open_page(browser, daemon)
    wait_row(browser, image_id, "COMPLETE").find_element(By.CSS_SELECTOR, "button.delete").click()
    WebDriverWait(browser, 20).until(lambda b: row(b, image_id) is None)
    status, _ = daemon.api("GET", f"/base_images/{image_id}")
    assert status == 404


def test_with_oauth_on_the_page_signs_its_requests_and_unsigned_changes_are_refused(oauth_daemon, browser):
    browser.get(oauth_daemon.url + "/imagefactory/ui/")
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "signin").is_displayed())
    assert not browser.find_element(By.ID, "app").is_displayed()
    # The page's own origin, without a signature: a build is refused.
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/imagefactory/base_images', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({base_image: {template: arguments[0]}})}).then(r => done(r.status), e => done(String(e)));",
        MOCK_TDL)
    assert status == 401, status
    # A wrong secret is refused too.
    browser.find_element(By.ID, "oauth-key").send_keys(OAUTH_KEY)
    browser.find_element(By.ID, "oauth-secret").send_keys("not-the-secret")
    browser.find_element(By.ID, "signin-button").click()
    WebDriverWait(browser, 10).until(lambda b: "refused" in b.find_element(By.ID, "signin-error").text)
    # Signed in: the page lists, builds and follows the stream.
    browser.find_element(By.ID, "oauth-secret").clear()
    browser.find_element(By.ID, "oauth-secret").send_keys(OAUTH_SECRET)
    browser.find_element(By.ID, "signin-button").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "live").text == "live")
    set_field(browser, "template", MOCK_TDL)
    WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "build").is_enabled())
    browser.find_element(By.ID, "build").click()
    started = WebDriverWait(browser, 10).until(
        lambda b: re.search(r"Started ([0-9a-f-]{36})", b.find_element(By.ID, "build-result").text))
    wait_row(browser, started.group(1), "COMPLETE")
    assert OAUTH_SECRET not in browser.page_source


def test_a_screenshot_of_the_page_for_the_readme(daemon, browser):
    base = daemon.build_base()
    daemon.wait(base)
    for target in ("mock", "mockstack"):
        status, answer = daemon.api("POST", "/target_images", {"target_image": {"base_image_id": base, "target": target}})
        assert status == 202, answer
        daemon.wait(answer["target_image"]["id"], collection="target_images")
    failed = daemon.build_base({"mock_fail_at": "create_base_image", "mock_keep_file": "console.log"})
    daemon.wait(failed)
    running = daemon.build_base({"mock_sleep_seconds": 60, "mock_progress_steps": 20})
    open_page(browser, daemon)
    wait_row(browser, running, "BUILDING")
    row(browser, failed).find_element(By.CSS_SELECTOR, "a.console-link").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "file-text"))
    browser.set_window_size(1400, 1500)
    browser.execute_script("window.scrollTo(0, 0);")
    time.sleep(1.5)
    out = TARGET / "ui-screenshot.png"
    assert browser.save_screenshot(str(out))
    assert out.stat().st_size > 10_000
    daemon.api("DELETE", f"/base_images/{running}")
