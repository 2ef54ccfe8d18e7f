"""The map page of `idx serve`, checked in headless Chromium (run by scripts/browser-test).

Usage: check_map_page.py BASE_URL OUT_DIR. Prints one line per check and a closing
'N passed, N failed'; exits 1 if any failed. Screenshots: OUT_DIR/map-*.png.
"""
import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, out = sys.argv[1], sys.argv[2]
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok    {name}" + (f" ({detail})" if detail else ""))
    else:
        failed += 1
        print(f"FAIL  {name}" + (f": {detail}" if detail else ""))


def api(path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
             "--force-device-scale-factor=1"]:
    options.add_argument(flag)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(60)
driver.set_script_timeout(60)
wait = WebDriverWait(driver, 60)
try:
    health = api("/healthz")
    documents = health["documents"]
    t0 = time.time()
    driver.get(base + "/")
    wait.until(lambda d: d.execute_script("return document.body.dataset.ready === 'true' || "
                                          "document.getElementById('status').classList.contains('error')"))
    status = driver.find_element(By.ID, "status").text
    check("page loads and reports the index", driver.execute_script("return document.body.dataset.ready") == "true",
          f"{status}; {time.time() - t0:.2f} s")

    # Wait for the first full frame, then read what the map reports.
    wait.until(lambda d: d.execute_script("return window.idxMap.stats.full"))
    stats = driver.execute_script("return window.idxMap.stats")
    check("the map draws every point", stats["points"] == documents and stats["drawn"] == documents,
          f"{stats['drawn']} of {documents} drawn, frame {stats['frameMs']:.1f} ms")
    painted = driver.execute_script("""
        const c = document.getElementById('map'), g = c.getContext('2d');
        const px = g.getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < px.length; i += 4) if (px[i] !== 246 || px[i + 1] !== 247 || px[i + 2] !== 249) n++;
        return n;""")
    check("the canvas holds the dots", painted >= min(documents, 50), f"{painted} painted pixels")
    legend = driver.find_elements(By.CSS_SELECTOR, "#legend li")
    check("the legend lists every genre", len(legend) == len(api("/map")["genres"]), f"{len(legend)} genres")

    # Results as you type, highlighted on the map.
    box = driver.find_element(By.ID, "query")
    box.send_keys("alien robot")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results li")) > 0)
    results = [li.find_element(By.TAG_NAME, "b").text for li in driver.find_elements(By.CSS_SELECTOR, "#results li")]
    expected = [h["title"] for h in api("/search?q=alien%20robot&k=20")]
    check("typing 'alien robot' lists the API's results", results == expected, f"{len(results)} results, first: {results[0]!r}")
    highlighted = driver.execute_script("return window.idxMap.highlighted.map(r => window.idxMap.data.ids[r])")
    hit_ids = [h["id"] for h in api("/search?q=alien%20robot&k=20")]
    check("the hits are highlighted on the map", sorted(highlighted) == sorted(hit_ids), f"{len(highlighted)} highlighted")
    driver.save_screenshot(f"{out}/map-search.png")

    # Hover the best hit whose dot is not under the legend: its card.
    row = driver.execute_script("""
        const m = window.idxMap, r = m.canvas.getBoundingClientRect();
        return m.highlighted.find(i => {
            const [x, y] = m.toScreen(i);
            return document.elementFromPoint(r.left + x / m.ratio, r.top + y / m.ratio) === m.canvas;
        }) ?? m.highlighted[0];""")
    sx, sy, w, h = driver.execute_script("""
        const m = window.idxMap, [x, y] = m.toScreen(arguments[0]), c = m.canvas;
        return [x / m.ratio, y / m.ratio, c.clientWidth, c.clientHeight];""", row)
    canvas = driver.find_element(By.ID, "map")
    ActionChains(driver).move_to_element_with_offset(canvas, int(round(sx - w / 2)), int(round(sy - h / 2))).perform()
    wait.until(lambda d: d.find_element(By.ID, "card").is_displayed())
    hovered = driver.execute_script("return window.idxMap.hovered")
    doc = api(f"/documents/{int(driver.execute_script('return window.idxMap.data.ids[arguments[0]]', hovered))}")
    card = driver.find_element(By.ID, "card").text
    check("hovering a point shows its card (title, year, genre, description)",
          doc["title"] in card and doc["genre"] in card and doc["description"][:40] in card
          and (doc["year"] is None or str(doc["year"]) in card),
          card.replace("\n", " | ")[:120])
    driver.save_screenshot(f"{out}/map-hover.png")

    # Click it: its nearest neighbours.
    ActionChains(driver).click().perform()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbour-list li")) > 0)
    listed = [li.find_element(By.TAG_NAME, "b").text for li in driver.find_elements(By.CSS_SELECTOR, "#neighbour-list li")]
    answer = api(f"/neighbours/{doc['id']}?k=10")
    check("clicking a point lists its nearest neighbours", listed == [n["title"] for n in answer["neighbours"]],
          f"{len(listed)} neighbours of {doc['title']!r}")
    related = driver.execute_script("return window.idxMap.related.length")
    check("the neighbours are marked on the map", related == len(listed), f"{related} marked")
    driver.save_screenshot(f"{out}/map-neighbours.png")

    # A legend click hides a genre's dots; a second shows them again.
    first = driver.find_element(By.CSS_SELECTOR, "#legend li")
    count = int(first.find_element(By.CLASS_NAME, "count").text.replace(",", ""))
    first.click()
    after = driver.execute_script("return window.idxMap.stats.drawn")
    first.click()
    back = driver.execute_script("return window.idxMap.stats.drawn")
    check("the legend toggles a genre", after == documents - count and back == documents,
          f"{first.get_attribute('data-genre')}: {documents} -> {after} -> {back}")

    # Zoom with the wheel, then double-click back to the whole map.
    driver.execute_script("""
        const c = document.getElementById('map'), r = c.getBoundingClientRect();
        c.dispatchEvent(new WheelEvent('wheel', {deltaY: -600, clientX: r.left + r.width / 2, clientY: r.top + r.height / 2, bubbles: true, cancelable: true}));""")
    zoomed = driver.execute_script("return window.idxMap.view.scale")
    driver.execute_script("window.idxMap.fit()")
    fitted = driver.execute_script("return window.idxMap.view.scale")
    check("the wheel zooms in", zoomed > fitted * 1.5, f"scale x{zoomed / fitted:.2f}")

    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    check("no console errors", not errors, "; ".join(e["message"] for e in errors)[:500])
finally:
    driver.quit()

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
