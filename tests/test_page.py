"""The web page (`http://127.0.0.1:9001/ui/`) in a real headless browser: Chromium from Debian, driven by
Selenium through Debian's chromedriver (nothing is downloaded), against `distill-live serve` playing the
demo. Screenshots of a desktop and a phone size are saved in the test's folder (and in docs/images/
when DISTILL_SCREENSHOTS=1, for the README)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pythonosc.udp_client import SimpleUDPClient

from oscpeers import Listener, free_port, wait_for

pytestmark = pytest.mark.slow  # runs distill-live serve and a browser

ROOT = Path(__file__).resolve().parent.parent
DEMO = next(p for p in (ROOT / "distill_live" / "demo" / "demo.distill", ROOT / "demo" / "demo.distill") if p.exists())
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
P = "/distill"

if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """serve playing the demo (recording to a file: this machine has no sound card of its own)."""
    tmp = tmp_path_factory.mktemp("page")
    osc_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen([sys.executable, "-m", "distill_live", "serve", str(DEMO), "--output", str(tmp / "out.wav"),
                             "--osc-port", str(osc_port), "--oscquery-port", str(http_port), "--midi-api", "off",
                             "--seconds", "600"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{http_port}/ui/"

    def up():
        try:
            return urllib.request.urlopen(url, timeout=1).status == 200
        except OSError:
            assert proc.poll() is None, proc.communicate()
            return False
    wait_for(up, 60, "serve's web page")
    listener = Listener()
    client = SimpleUDPClient("127.0.0.1", osc_port)
    client.send_message(f"{P}/reply", listener.port)
    yield type("Served", (), dict(url=url, client=client, listener=listener, tmp=tmp, proc=proc))
    listener.close()
    proc.terminate()
    proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, to check for errors
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def dumped(served, address):
    """The value the engine holds for `address`, asked over OSC with /distill/dump."""
    start = len(served.listener.messages)
    served.client.send_message(f"{P}/dump", [])
    wait_for(lambda: any(a == f"{P}/dump/end" for a, _ in served.listener.messages[start:]), 10, "/distill/dump/end")
    states = [m for a, m in served.listener.messages[start:] if a == f"{P}/state" and m[0] == address]
    return states[-1][1] if states else None


def page_value(driver, address):
    return driver.execute_script("return window.distill.values[arguments[0]]", address)


def test_the_page_steers_follows_and_shows_the_codes(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(served.url)
    fader = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'input[data-address="{P}/world/bells"]'),
                     30, "the world faders")[0]
    groups = [e.text.lower() for e in browser.find_elements(By.CSS_SELECTOR, "legend")]
    assert {"output", "sampling", "worlds", "descriptors", "cues", "levels", "presets"} <= set(groups), groups
    wait_for(lambda: browser.find_element(By.ID, "link").text == "live", 10, "the WebSocket")

    # moving a world fader on the page: the engine obeys
    fader.send_keys(Keys.END)
    wait_for(lambda: dumped(served, f"{P}/world/bells") == 1.0, 10, "world/bells at 1 in the engine")
    fader.send_keys(Keys.HOME)
    wait_for(lambda: dumped(served, f"{P}/world/bells") == 0.0, 10, "world/bells at 0 in the engine")

    # a control changed over OSC: the page follows
    served.client.send_message(f"{P}/temperature", 0.25)
    wait_for(lambda: page_value(browser, f"{P}/temperature") == 0.25, 10, "the page's temperature")
    temperature = browser.find_element(By.CSS_SELECTOR, f'input[data-address="{P}/temperature"]')
    assert float(temperature.get_attribute("value")) == 0.25

    # a second page stays in step with the first
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(served.url)
    wait_for(lambda: browser.execute_script("return window.distill.frames") > 0, 30, "codes on the second page")
    second = browser.current_window_handle
    browser.switch_to.window(first)
    topk = browser.find_element(By.CSS_SELECTOR, f'input[data-address="{P}/topk"]')
    top = int(topk.get_attribute("max"))
    topk.send_keys(Keys.END)
    wait_for(lambda: dumped(served, f"{P}/topk") == top, 10, "topk at its top in the engine")
    browser.switch_to.window(second)
    wait_for(lambda: page_value(browser, f"{P}/topk") == top, 10, "the second page's topk")
    browser.close()
    browser.switch_to.window(first)

    # the live view: codes scroll, one column a frame, within the code range
    frames = browser.execute_script("return window.distill.frames")
    wait_for(lambda: browser.execute_script("return window.distill.frames") > frames + 20, 10, "codes to scroll")
    codes = browser.execute_script("return window.distill.codes.slice(-1)[0]")
    levels = browser.execute_script("return window.distill.levels")
    assert len(codes) == levels and all(c >= 0 for c in codes), codes

    # a cue from the list: the page shows it
    browser.find_element(By.CSS_SELECTOR, f'#cues button[title="{P}/cue 1"]').click()
    wait_for(lambda: browser.find_element(By.ID, "cue").text == "1", 10, "the current cue on the page")

    # nothing on the page comes from outside the machine
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
    assert all(s.startswith(("http://127.0.0.1", "ws://127.0.0.1")) for s in sources), sources

    shots = [served.tmp / "page-desktop.png", served.tmp / "page-phone.png"]
    browser.save_screenshot(str(shots[0]))
    browser.set_window_size(390, 844)
    time.sleep(0.5)
    browser.save_screenshot(str(shots[1]))
    browser.set_window_size(1280, 900)
    if os.environ.get("DISTILL_SCREENSHOTS") == "1":
        for shot in shots:
            shutil.copy(shot, ROOT / "docs" / "images" / shot.name)
    assert all(s.stat().st_size > 10_000 for s in shots)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def test_a_hidden_page_stops_listening_to_the_measures_and_keeps_its_controls(served, browser):
    """A page behind another tab (as on a phone whose screen is locked) is hidden for real: it stops
    listening to what the engine measures (no codes, meters or descriptors come, so nobody measures them
    for it) while its controls still follow; in front again, its code grid starts afresh and scrolls."""
    browser.get(served.url)
    wait_for(lambda: browser.execute_script("return window.distill.frames") > 10, 30, "codes on the page")
    page = browser.current_window_handle
    browser.execute_script("window.open(location.href, '_blank')")  # a second page in front, same origin: it sees its opener
    wait_for(lambda: len(browser.window_handles) == 2, 10, "a tab in front of the page")
    browser.switch_to.window(next(h for h in browser.window_handles if h != page))
    opener = lambda what: browser.execute_script(f"return window.opener.{what}")  # noqa: E731
    wait_for(lambda: opener("document.hidden"), 10, "the page hidden behind it")

    def settled():  # what was on its way when it hid has come
        before = opener("distill.frames")
        time.sleep(0.3)
        return opener("distill.frames") == before
    wait_for(settled, 10, "the hidden page's codes to stop")
    frames = opener("distill.frames")
    served.client.send_message(f"{P}/temperature", 0.75)
    wait_for(lambda: opener(f"distill.values['{P}/temperature']") == 0.75, 10, "the hidden page's temperature")
    time.sleep(0.5)  # 25 frames played meanwhile
    assert opener("distill.frames") == frames
    browser.close()
    browser.switch_to.window(page)
    wait_for(lambda: not browser.execute_script("return document.hidden"), 10, "the page in front again")
    wait_for(lambda: browser.execute_script("return window.distill.codes.length") > 10, 10, "codes again")
    now, shown = browser.execute_script("return [window.distill.frames, window.distill.codes.length]")
    assert now - frames == shown  # afresh: the grid holds only the frames that came since (consecutive ones)


def test_a_region_selected_on_the_grid_and_locked_holds_its_codes(served, browser):
    """Drag across the code grid (frames x levels), press lock: /distill/codes, heard over OSC, hold the
    selected codes on the selected levels; release lets go. Then at a phone's size a finger (touch events
    through Chromium's DevTools protocol) selects a span and loop holds it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    served.client.send_message(f"{P}/temperature", 1.0)  # (the first test left it low: codes repeat there)
    browser.get(served.url)
    # a full grid: columns 200-223 must hold frames this page has had (`newest` is the engine's frame
    # number, long past 256 by now, so it says nothing of how many came since the page loaded)
    wait_for(lambda: browser.execute_script("return window.distill.codes.length") >= 256, 30, "a full grid of codes")
    canvas = browser.find_element(By.ID, "grid")
    levels = browser.execute_script("return window.distill.levels")
    width, height = canvas.size["width"], canvas.size["height"]
    at = lambda column, level: (int((column + 0.5) / 256 * width - width / 2),  # noqa: E731 (from the centre)
                                int((level + 0.5) / levels * height - height / 2))
    before = browser.execute_script("return window.distill.newest")
    ActionChains(browser).move_to_element_with_offset(canvas, *at(200, 0)).click_and_hold() \
        .move_to_element_with_offset(canvas, *at(223, 1)).release().perform()
    selection, region, after = browser.execute_script("""
        const d = window.distill, s = d.selection;
        return [s, Array.from({length: s.length}, (_, i) => d.codes[d.codes.length - 1 - (d.newest - s.first - i)]),
                d.newest];""")
    # 24 columns; the frame pressed stays put while the grid scrolls on under the pointer (a slow machine
    # can play a frame or two during the drag: they add to the span, as for the finger below)
    scrolled = after - before
    assert before - 55 <= selection["first"] <= before - 55 + scrolled, (before, scrolled, selection)
    assert 24 <= selection["length"] <= 24 + scrolled and (selection["top"], selection["bottom"]) == (0, 1), \
        (scrolled, selection)
    held = {tuple(row[:2]) for row in region}
    assert all(min(row) >= 0 for row in region) and len(held) > 3, region
    free = browser.execute_script("return window.distill.codes.slice(-200)")
    assert sum(tuple(row[:2]) in held for row in free) < 150  # playing freely, most frames are not the region's

    browser.find_element(By.CSS_SELECTOR, '#hold button[data-mode="1"]').click()
    wait_for(lambda: dumped(served, f"{P}/region/mode") == 1, 10, "the engine holding the region")
    assert dumped(served, f"{P}/region/start") == selection["first"]
    start = len(served.listener.messages)
    wait_for(lambda: sum(a == f"{P}/codes" for a, _ in served.listener.messages[start:]) > 30, 20, "codes, held")
    heard = [tuple(m[:2]) for a, m in served.listener.messages[start:] if a == f"{P}/codes"]
    assert len(heard) > 20 and all(h in held for h in heard), (held, heard)
    assert len(set(heard)) > 3  # round the loop, not one frame
    wait_for(lambda: browser.execute_script("return window.distill.heldAt") > 0, 10, "the page showing the hold")
    wait_for(lambda: browser.execute_script("return window.distill.newest - window.distill.heldAt") > 60, 10,
             "a second of the hold on the grid")
    assert browser.find_element(By.CSS_SELECTOR, '#hold button[data-mode="1"]').get_attribute("class") == "on"
    shot = served.tmp / "page-region.png"
    browser.save_screenshot(str(shot))
    if os.environ.get("DISTILL_SCREENSHOTS") == "1":
        shutil.copy(shot, ROOT / "docs" / "images" / shot.name)

    browser.find_element(By.CSS_SELECTOR, '#hold button[data-mode="0"]').click()
    wait_for(lambda: dumped(served, f"{P}/region/mode") == 0, 10, "the region released")
    start = len(served.listener.messages)
    wait_for(lambda: sum(a == f"{P}/codes" for a, _ in served.listener.messages[start:]) > 30, 20, "codes, free")
    heard = [tuple(m[:2]) for a, m in served.listener.messages[start:] if a == f"{P}/codes"]
    assert not all(h in held for h in heard[5:])

    # on a phone: a finger dragged across the grid (touch events, as a touch screen sends them), then loop
    browser.set_window_size(390, 844)
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    browser.execute_script("document.getElementById('grid').scrollIntoView()")
    box = browser.execute_script("const b = document.getElementById('grid').getBoundingClientRect();"
                                 "return [b.left, b.top, b.width, b.height];")
    point = lambda column, level: {"x": box[0] + (column + 0.5) / 256 * box[2],  # noqa: E731
                                   "y": box[1] + (level + 0.5) / levels * box[3]}
    before = browser.execute_script("return window.distill.newest")
    for kind, points in (("touchStart", [point(240, 1)]), ("touchMove", [point(247, 2)]),
                         ("touchMove", [point(250, levels - 1)]), ("touchEnd", [])):
        browser.execute_cdp_cmd("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    scrolled = browser.execute_script("return window.distill.newest") - before
    touched = browser.execute_script("return window.distill.selection")
    # the frame first touched stays put as the grid scrolls on under the finger: 11 columns and what scrolled
    assert before - 15 <= touched["first"] <= before - 15 + scrolled, (before, scrolled, touched)
    assert 11 <= touched["length"] <= 11 + scrolled and (touched["top"], touched["bottom"]) == (1, levels - 1)
    browser.find_element(By.CSS_SELECTOR, '#hold button[data-mode="2"]').click()
    wait_for(lambda: dumped(served, f"{P}/region/mode") == 2, 10, "the engine looping the touched span")
    assert [dumped(served, f"{P}/region/{n}") for n in ("start", "length", "top", "bottom")] == \
        [touched["first"], touched["length"], 1, levels - 1]
    browser.find_element(By.CSS_SELECTOR, '#hold button[data-mode="0"]').click()
    wait_for(lambda: dumped(served, f"{P}/region/mode") == 0, 10, "the loop released")
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": False})
    browser.set_window_size(1280, 900)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
