"""Screenshot of the page at `/` with real photos uploaded, for the README (docs/serve-page.png).

Starts `qvl-label serve` on the generated tiny model (or --model/--mmproj), opens the page in
Debian's headless Chromium, uploads the photos and saves the window once every card has a status.
The tiny model's wording is random text inside the grammar: the screenshot shows the page, not
label quality.

    python scripts/screenshot_page.py [-o docs/serve-page.png] [PHOTO ...]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from qvl_label import tinymodel

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PHOTOS = [
    ROOT / "tests/fixtures/products/wj04-white_main.jpg",
    ROOT / "tests/fixtures/products/Tropicana-Apple-Juice_001.jpg",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="*", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/serve-page.png")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            generated = tinymodel.generate(Path(tmp))
            args.model, args.mmproj = generated.model, generated.mmproj
        command = [sys.executable, "-m", "qvl_label", "serve", "--port", "0", "--no-cache", "--lang", "zh,en"]
        command += ["--model", str(args.model), "--mmproj", str(args.mmproj), "--image-max-tokens", "256"]
        server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stderr is not None
            url = next(m.group(1) for line in server.stderr if (m := re.search(r"serving on (http://\S+)", line)))
            options = Options()
            options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
            for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1500"):
                options.add_argument(flag)
            driver = webdriver.Chrome(
                service=Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                options=options,
            )
            try:
                driver.get(url + "/")
                WebDriverWait(driver, 30).until(lambda d: "parallel" in d.find_element(By.ID, "model").text)
                driver.find_element(By.ID, "files").send_keys("\n".join(str(p.resolve()) for p in args.photos))
                WebDriverWait(driver, 300).until(
                    lambda d: (
                        all(
                            s.text and s.text != "labelling…" for s in d.find_elements(By.CSS_SELECTOR, ".card .status")
                        )
                        and len(d.find_elements(By.CSS_SELECTOR, ".card .status")) == len(args.photos)
                    )
                )
                args.output.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.output))
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(60)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
