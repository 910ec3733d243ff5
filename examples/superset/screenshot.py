"""Log in to Superset in headless Chromium, open the dashboard and save a PNG of it.

    python screenshot.py --superset http://127.0.0.1:8188 --ids STATE/superset_ids.json \
        --out docs/img/superset-avg-charges-by-region.png

Uses Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) through Selenium, which Superset already depends on; nothing is
downloaded.  The page is the dashboard in standalone mode; the script waits until the bar
chart has drawn (its canvas is there and no chart is loading), then a little for ECharts'
animation.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-extensions", "--disable-sync",
         "--disable-default-apps", "--disable-component-update", "--no-first-run",
         "--metrics-recording-only", "--hide-scrollbars", "--window-size=1200,900",
         "--force-device-scale-factor=1"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--superset", required=True)
    ap.add_argument("--ids", required=True, help="the JSON setup_superset.py wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password", default="admin")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args(argv)
    with open(args.ids) as f:
        ids = json.load(f)
    base = args.superset.rstrip("/")
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for flag in FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=opts)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the PNG's exact size
        "width": 1200, "height": 700, "deviceScaleFactor": 1, "mobile": False})
    try:
        driver.get(f"{base}/login/")
        wait = WebDriverWait(driver, 60)
        user = wait.until(lambda d: d.find_element(
            By.CSS_SELECTOR, "input[name='username'], input#username"))
        user.send_keys(args.user)
        pw = driver.find_element(By.CSS_SELECTOR, "input[name='password'], input#password")
        pw.send_keys(args.password, Keys.ENTER)
        wait.until(lambda d: "/login" not in d.current_url)
        t = time.monotonic()
        driver.get(f"{base}/superset/dashboard/{ids['slug']}/?standalone=1")

        def drawn(d) -> bool:
            canvases = d.find_elements(By.CSS_SELECTOR, ".dashboard-component-chart-holder "
                                       "canvas, .chart-container canvas")
            loading = d.find_elements(By.CSS_SELECTOR, ".dashboard-component-chart-holder "
                                      ".loading, [data-test='loading-indicator']")
            return bool(canvases) and not loading

        try:
            WebDriverWait(driver, 300, poll_frequency=0.25).until(drawn)
        except TimeoutException:
            driver.save_screenshot(args.out + ".timeout.png")
            raise SystemExit(f"the chart did not draw within 300 s; see {args.out}.timeout.png"
                             ) from None
        print(f"dashboard drawn {time.monotonic() - t:.1f} s after opening it "
              "(page load, the secure chart query, rendering)")
        time.sleep(3)  # ECharts' bar animation
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"screenshot: {args.out}")
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
