"""Drives ward's web page in Debian's headless Chromium (tests/browser.rs
runs it with /usr/bin/python3 and python3-selenium): loads /ui/ from
ward's API address, enters the secret, checks the tree shows the paths
asked for, kills an actor and sees its restart count go up on the page
within 2 s, sees a kill from outside the page arrive through the tree's
WebSocket, picks another member of a group, saves a screenshot, and fails
on any SEVERE entry in the browser's console log or on any resource not
loaded from ward. Exits 0 only when all of that held.
"""

import argparse
import json
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--window-size=1280,1500",
]


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True, help="http://ip:port of ward's API")
    p.add_argument("--secret", required=True)
    p.add_argument("--expect", action="append", default=[],
                   help="a tree path; ending in / means any path under it")
    p.add_argument("--kill", required=True, help="the actor whose kill button to click")
    p.add_argument("--group", required=True)
    p.add_argument("--member", required=True, help="the member to pick")
    p.add_argument("--screenshot", required=True)
    return p.parse_args()


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A path given: Selenium Manager does not go looking for a driver online.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def row(driver, path):
    selector = f'.row[data-path^="{path}"]' if path.endswith("/") else f'.row[data-path="{path}"]'
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found else None


def wait(driver, what, seconds, check):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.05).until(lambda d: check(d))
    except Exception:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from None


def run(driver, args):
    driver.get(f"{args.base}/ui/")
    secret = wait(driver, "the secret prompt", 10, lambda d: d.find_element(By.ID, "secret"))
    secret.send_keys(args.secret)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()

    for path in args.expect:
        wait(driver, f"the tree to show {path}", 10, lambda d: row(d, path))
    print("tree shows", ", ".join(args.expect))

    target = row(driver, args.kill)
    before = int(target.get_attribute("data-restarts"))
    target.find_element(By.CSS_SELECTOR, "button.kill").click()
    clicked = time.monotonic()
    wait(driver, f"{args.kill}'s restart count above {before}", 2,
         lambda d: int(row(d, args.kill).get_attribute("data-restarts")) > before)
    print(f"{args.kill} restarts {before} -> above, seen after {time.monotonic() - clicked:.2f} s")
    assert "flash" in row(driver, args.kill).get_attribute("class"), "the restarted row flashes"

    # Pushed, not polled: once the tree's WebSocket is open the page polls
    # no tree; a kill from outside the page shows through a push.
    pushes = lambda d: int(d.find_element(By.ID, "tree").get_attribute("data-pushes") or 0)
    wait(driver, "a tree pushed over the WebSocket", 5, lambda d: pushes(d) >= 1)
    before, pushed = int(row(driver, args.kill).get_attribute("data-restarts")), pushes(driver)
    kill = urllib.request.Request(f"{args.base}/tree/kill?path={args.kill}", method="POST",
                                  headers={"Authorization": f"Bearer {args.secret}"})
    with urllib.request.urlopen(kill, timeout=5) as reply:
        assert json.load(reply)["ok"], "killed from outside the page"
    wait(driver, f"{args.kill}'s restart count above {before}, pushed", 3,
         lambda d: int(row(d, args.kill).get_attribute("data-restarts")) > before and pushes(d) > pushed)
    print(f"{args.kill} restarted again, seen through a push")

    picker = driver.find_element(By.CSS_SELECTOR, f'select[data-group="{args.group}"]')
    Select(picker).select_by_value(args.member)
    # Let go of the picker, so the page shows the group's pick as ward reports it.
    driver.find_element(By.TAG_NAME, "h1").click()
    wait(driver, f"{args.group}'s now to be {args.member} after a poll", 5,
         lambda d: Select(d.find_element(By.CSS_SELECTOR, f'select[data-group="{args.group}"]'))
         .first_selected_option.get_attribute("value") == args.member
         and d.find_elements(By.CSS_SELECTOR, "#dns svg.chart"))

    wait(driver, "a live flow on the page", 5,
         lambda d: d.find_elements(By.CSS_SELECTOR, "#flows tr[data-flow]"))
    # A few more polls so the DNS charts have points.
    wait(driver, "the DNS charts to have lines", 10,
         lambda d: len(d.find_elements(By.CSS_SELECTOR, "#dns svg.chart polyline")) >= 1)

    foreign = driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(arguments[0] + '/'))", args.base)
    assert not foreign, f"resources from elsewhere than ward: {foreign}"
    assert driver.save_screenshot(args.screenshot), "the screenshot is saved"


def main():
    args = parse()
    with tempfile.TemporaryDirectory(prefix="ward-chromium-") as profile:
        driver = browser(profile)
        try:
            run(driver, args)
            severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not severe, f"SEVERE in the browser console: {severe}"
        finally:
            driver.quit()
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
