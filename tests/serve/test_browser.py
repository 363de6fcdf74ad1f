"""`explore serve` in a real browser: Debian's headless Chromium, driven by Selenium through chromium-driver,
opens the page, loads a sweep point as the compressed model, uploads an image, asks a question and reads both
answers, then generates images and sees them.
Screenshots are kept in the test's temporary folder (ask.png, generate.png).

The browser may reach this machine only: every host name but 127.0.0.1 resolves to nothing.
"""

import os
import shutil

import pytest
from PIL import Image
from selenium import webdriver  # the test extra
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from explore.world.render import render
from explore.world.splits import split_scene

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WAIT_S = 120  # the first click loads the models; on 2 busy cores that can take a while


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        message = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1100",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(driver, condition, what: str):
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(lambda d: condition(d), message=what)


def cells(driver, element_id: str) -> list[str]:
    """The visible cells of a Gradio dataframe, row by row (its <table> is a hidden copy for measuring)."""
    return [cell.text.strip() for cell in driver.find_elements(By.CSS_SELECTOR, f"#{element_id} [role=gridcell]")]


def tab(driver, name: str) -> None:
    driver.find_element(By.XPATH, f"//button[@role='tab'][normalize-space()='{name}']").click()


def test_upload_ask_and_generate_in_chromium(browser, served, tiny_sweep, tmp_path):
    url, _ = served
    picture = tmp_path / "four-shapes.png"  # test scene 0: four objects (README: `explore ask` says 4)
    render(split_scene("test", 0, 0), 64).save(picture)

    browser.get(url)
    wait_for(browser, lambda d: d.find_elements(By.ID, "ask-button"), "the page did not load")
    # a sweep point becomes the compressed model of the Ask tab
    tab(browser, "Sweep")
    folder = browser.find_element(By.CSS_SELECTOR, "#sweep-folder textarea, #sweep-folder input")
    folder.clear()
    folder.send_keys(str(tiny_sweep))
    browser.find_element(By.ID, "sweep-open").click()
    wait_for(browser, lambda d: "q8" in cells(d, "sweep-table"), "the sweep table did not appear")
    browser.find_element(By.ID, "sweep-load").click()
    compressed = browser.find_element(By.CSS_SELECTOR, "#ask-compressed textarea, #ask-compressed input")
    wait_for(browser, lambda d: compressed.is_displayed() and str(tiny_sweep.name) in compressed.get_attribute("value"),
             "loading the point did not fill the Ask tab")  # fmt: skip
    browser.find_element(By.CSS_SELECTOR, '#ask-source label[data-testid="upload-radio-label"]').click()
    browser.find_element(By.CSS_SELECTOR, "#ask-upload input[type=file]").send_keys(str(picture))
    wait_for(browser, lambda d: "uploaded four-shapes.png: 64×64 px" in d.find_element(By.ID, "ask-truth").text,
             "the uploaded image was not shown")  # fmt: skip
    question = browser.find_element(By.CSS_SELECTOR, "#ask-question textarea, #ask-question input")
    question.clear()
    question.send_keys("How many objects are there?")
    browser.find_element(By.ID, "ask-button").click()
    wait_for(browser, lambda d: "embedded" in cells(d, "ask-answers"), "no answer appeared")
    wait_for(browser, lambda d: "compressed" in cells(d, "ask-answers"), "no answer of the compressed model")
    table = cells(browser, "ask-answers")
    original, other = table[:5], table[5:]
    assert original[:3] == ["original", "embedded", "4"], table
    assert other[:2] == ["compressed", "q8 (sweep point)"] and other[2], table
    assert float(original[3]) > 0 and float(other[3]) > 0  # latency (ms)
    browser.save_screenshot(str(tmp_path / "ask.png"))

    tab(browser, "Generate")
    steps = browser.find_element(By.CSS_SELECTOR, "#generate-steps input[type=number]")
    steps.clear()
    steps.send_keys("2")
    steps.send_keys("\t")
    browser.find_element(By.ID, "generate-button").click()
    images = wait_for(browser, lambda d: [img for img in d.find_elements(By.CSS_SELECTOR, "#generate-images img")
                                          if d.execute_script("return arguments[0].naturalWidth", img) > 0],
                      "no generated image appeared")  # fmt: skip
    assert len(images) >= 1
    wait_for(browser, lambda d: "2 steps" in d.find_element(By.ID, "generate-summary").text,
             "the generation summary does not say 2 steps")  # fmt: skip
    assert "How many objects are there?" in cells(browser, "generate-questions")
    browser.save_screenshot(str(tmp_path / "generate.png"))
    for name in ("ask.png", "generate.png"):
        with Image.open(tmp_path / name) as shot:
            assert shot.size[0] >= 1000
