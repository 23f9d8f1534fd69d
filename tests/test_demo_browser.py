"""The explorers as a student meets them: ``make demo``'s Voila app and JupyterLab, in a real headless Chromium.

What ``make demo`` serves is rebuilt here the same way (smoke-profile copies of ``gap/03_explorer`` and
``mace/05_explore`` by :func:`xailib.reproduce.prepare_smoke`, ``voila DIR --no-browser --Voila.ip=127.0.0.1``), on
a free port. Through Selenium the tests then work each page as a student would -- pick an image, pick a class,
decompose a channel, back up -- and after every step check what the page shows against the explorer's own state,
computed here in Python from the same model and images (gAP), or against what the page itself says (MACE). A
screenshot of the explorer after each step goes to ``build/demo_screenshots/``. The last test opens the notebooks in
JupyterLab, runs all cells from the *Run* menu and checks that the widget renders as a widget, not as its text
fallback.

Needs Chromium and chromedriver (``make browsers``, or ``apt-get install chromium chromium-driver``); skipped with
that advice where they are missing. Every server started here is stopped at the end, also when a test fails, and
every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "demo_browser"  # the notebooks served and the servers' logs (make demo uses build/demo)
SHOTS = ROOT / "build" / "demo_screenshots"
NOTEBOOKS = {"gap": "gap/03_explorer.ipynb", "mace": "mace/05_explore.ipynb",
             "explainer": "explainer/03_explore.ipynb"}

SERVER_START_S = 90  # a server answers HTTP
NOTEBOOK_S = 240  # a notebook has run and its explorer is drawn (smoke profile: ~15 s here, alone)
STEP_S = 60  # one click or key press has reached the kernel and the page is redrawn
STOP_S = 20  # a server has shut its kernels down after SIGTERM

INSTALL_HINT = ("install them with `make browsers` (as root: apt-get install chromium chromium-driver), or set "
                "CHROMIUM and CHROMEDRIVER to their paths")


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if os.access(os.environ[env], os.X_OK) else None
    return next((found for found in map(shutil.which, names) if found), None)


CHROMIUM = _find("CHROMIUM", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _find("CHROMEDRIVER", "chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    missing = " and ".join(n for n, p in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)) if p is None)
    pytest.skip(f"the browser tests need {missing}, not installed here; {INSTALL_HINT}.", allow_module_level=True)
for _module in ("selenium", "voila", "jupyterlab"):
    pytest.importorskip(_module, reason=f"{_module} is not installed; run `make install` "
                                        f"(or {sys.executable} -m pip install -e '.[dev]')")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


# --------------------------------------------------------------------------------------------------
# Servers and the browser: started here, always stopped
# --------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (Linux ``/proc``; empty elsewhere). Jupyter starts each kernel in a
    session of its own, so stopping the server's process group does not reach them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def _log_tail(log: Path, n: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@contextmanager
def _server(name: str, args: list[str], ready_url: str, env: dict[str, str] | None = None):
    """Run ``args`` (a Jupyter server) until the block ends; wait at most SERVER_START_S until ``ready_url`` answers
    200. Stopped with SIGTERM (it then shuts its kernels down), killed after STOP_S, and any kernel it leaves is
    killed by its PID."""
    log = BUILD / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode} before it answered; "
                                   f"{log}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(ready_url, timeout=5) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer {ready_url} within {SERVER_START_S} s; "
                                   f"{log}:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield log
    finally:
        kernels = {pid: _cmdline(pid) for pid in _descendants(proc.pid)}
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(STOP_S)
        for pid, cmdline in kernels.items():
            if cmdline and _cmdline(pid) == cmdline:  # still that kernel, not a new process with its PID
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="module")
def served_dir() -> Path:
    """Smoke-profile copies of the two explorer notebooks, as ``make demo`` prepares them."""
    from xailib.reproduce import prepare_smoke

    prepare_smoke(BUILD / "notebooks", only=",".join(p.removesuffix(".ipynb") for p in NOTEBOOKS.values()))
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):  # the folder shows this run only
        old.unlink()
    return BUILD / "notebooks"


# kernels on one thread, as everywhere in the tests: the machine has two cores and two processes to share them
SERVER_ENV = {"OMP_NUM_THREADS": "1", "JUPYTER_PLATFORM_DIRS": "1"}


@pytest.fixture(scope="module")
def voila(served_dir):
    """Base URL of a Voila server on 127.0.0.1 serving ``served_dir``, as ``make demo`` starts it."""
    port = _free_port()
    args = [sys.executable, "-m", "voila", str(served_dir), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
            "--MappingKernelManager.cull_idle_timeout=300", "--MappingKernelManager.cull_interval=60"]
    with _server("voila", args, f"http://127.0.0.1:{port}/", SERVER_ENV) as log:
        yield f"http://127.0.0.1:{port}", log


@pytest.fixture(scope="module")
def lab(served_dir, tmp_path_factory):
    """``(base URL, token, log)`` of a JupyterLab server on 127.0.0.1 on ``served_dir``, with settings and workspaces
    of its own (the user's are not touched; the announcements prompt is off)."""
    port, token = _free_port(), "xailib-" + os.urandom(8).hex()
    home = tmp_path_factory.mktemp("lab")
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={served_dir}", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # CI containers run as root; Jupyter refuses that without the flag
    env = {**SERVER_ENV, "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    with _server("jupyterlab", args, f"http://127.0.0.1:{port}/api/status?token={token}", env) as log:
        yield f"http://127.0.0.1:{port}", token, log


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by chromedriver; quit at the end."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1600", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_page_load_timeout(NOTEBOOK_S)  # Voila streams the page while the notebook runs
        driver.set_script_timeout(STEP_S)
        yield driver
    finally:
        driver.quit()


# --------------------------------------------------------------------------------------------------
# Reading and working a page of ipywidgets
# --------------------------------------------------------------------------------------------------

_JS_TEXTS = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText.trim());"
_JS_IMAGE_DIGESTS = """
const done = arguments[arguments.length - 1];
const imgs = Array.from(document.querySelectorAll(arguments[0]));
Promise.all(imgs.map(i => fetch(i.src).then(r => r.arrayBuffer())
                      .then(b => crypto.subtle.digest('SHA-256', b))
                      .then(d => Array.from(new Uint8Array(d)).map(x => x.toString(16).padStart(2, '0')).join(''))))
  .then(done, e => done('error: ' + e));
"""


class Page:
    """The explorer widget on a page (Voila or a JupyterLab notebook), read and worked by what a student sees:
    labels, texts, buttons. ``root`` is the CSS selector of the page region holding the explorer."""

    def __init__(self, driver, log: Path, root: str = ".jp-OutputArea-output > .widget-vbox"):
        self.driver, self.log, self.root = driver, log, root

    # -- reading -----------------------------------------------------------------------------------
    def texts(self, css: str) -> list[str]:
        return self.driver.execute_script(_JS_TEXTS, f"{self.root} {css}")

    def html_texts(self) -> list[str]:
        """The text of every HTML widget of the explorer, in page order."""
        return self.texts(".widget-html-content")

    def text_starting(self, prefix: str) -> str | None:
        return next((t for t in self.html_texts() if t.startswith(prefix)), None)

    def buttons(self) -> dict[str, bool]:
        """Button label -> enabled."""
        return {b.text.strip(): b.is_enabled() for b in self.driver.find_elements(By.CSS_SELECTOR,
                                                                                     f"{self.root} .widget-button")}

    def dropdown(self, label: str) -> Select:
        return Select(self._labelled("widget-dropdown", label).find_element(By.TAG_NAME, "select"))

    def options(self, label: str) -> list[str]:
        """Option texts of the dropdown ``label`` (as ``value``: with plain spaces)."""
        return [o.get_attribute("value") for o in self.dropdown(label).options]

    def selected(self, label: str) -> str:
        return self.dropdown(label).first_selected_option.get_attribute("value")

    def image_digests(self, css: str) -> list[str]:
        """SHA-256 of the pictures shown by the ``widget-image`` elements under ``css`` (they are blob URLs)."""
        out = self.driver.execute_async_script(_JS_IMAGE_DIGESTS, f"{self.root} {css}")
        assert isinstance(out, list), f"could not read the pictures: {out}"
        return out

    # -- working -----------------------------------------------------------------------------------
    def _labelled(self, kind: str, label: str):
        for el in self.driver.find_elements(By.CSS_SELECTOR, f"{self.root} .{kind}"):
            labels = el.find_elements(By.CSS_SELECTOR, ".widget-label")
            if labels and labels[0].text.strip() == label:
                return el
        raise AssertionError(f"no {kind} labelled {label!r} in the explorer; labels: "
                             f"{self.texts('.widget-label')}")

    def type_into_slider(self, label: str, value: int) -> None:
        """Type ``value`` into the slider's number (its readout) and press Enter."""
        readout = self._labelled("widget-slider", label).find_element(By.CSS_SELECTOR, ".widget-readout")
        readout.click()
        readout.send_keys(Keys.CONTROL, "a")
        readout.send_keys(str(value), Keys.ENTER)

    def press_on_slider(self, label: str, key=Keys.ARROW_RIGHT) -> None:
        """Focus the slider's handle and press ``key`` (one step)."""
        self._labelled("widget-slider", label).find_element(By.CSS_SELECTOR, ".noUi-handle").send_keys(key)

    def choose(self, label: str, option: str) -> None:
        self.dropdown(label).select_by_value(option)

    def click(self, button: str) -> None:
        for b in self.driver.find_elements(By.CSS_SELECTOR, f"{self.root} .widget-button"):
            if b.text.strip() == button:
                self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", b)
                b.click()
                return
        raise AssertionError(f"no button {button!r}; the explorer shows {sorted(self.buttons())}")

    # -- waiting and evidence ------------------------------------------------------------------------
    def wait(self, condition, what: str, timeout: float = STEP_S):
        """Wait (at most ``timeout`` s) until ``condition(self)`` is truthy; on timeout fail with what the page
        showed and the server's log."""
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.25,
                                 ignored_exceptions=(StaleElementReferenceException, AssertionError)).until(
                lambda _d: condition(self))
        except TimeoutException:
            shot = SHOTS / f"FAILED_{re.sub(r'[^A-Za-z0-9]+', '_', what)[:60]}.png"
            self.driver.save_screenshot(str(shot))
            try:
                shown = self.html_texts()
            except Exception as exc:  # noqa: BLE001 - the page may be gone; say so instead
                shown = f"(could not read the page: {exc})"
            raise AssertionError(f"waited {timeout} s for {what}; the explorer shows {shown!r}; "
                                 f"screenshot {shot}; server log:\n{_log_tail(self.log)}") from None

    def screenshot(self, name: str) -> Path:
        """A picture of the explorer alone, ``build/demo_screenshots/<name>.png``."""
        el = self.driver.find_element(By.CSS_SELECTOR, self.root)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", el)
        path = SHOTS / f"{name}.png"
        path.unlink(missing_ok=True)
        assert el.screenshot(str(path)), f"could not save {path}"
        assert path.stat().st_size > 1000, f"{path} is (nearly) empty"
        return path


def _open_voila(browser, voila, notebook: str, from_home: bool = False) -> Page:
    """Open ``notebook`` in Voila, by its URL or, ``from_home``, as the README says: the home page
    ``http://127.0.0.1:PORT/``, a click on its folder, a click on it (Voila opens it in a new tab; the home tab is
    closed). Returns once the explorer is drawn."""
    url, log = voila
    if not from_home:
        browser.get(f"{url}/voila/render/{notebook}")
    else:
        browser.get(f"{url}/")
        home = browser.current_window_handle
        for name in notebook.split("/"):
            xpath = f"//li[contains(@class, 'jp-DirListing-item')]//span[normalize-space(text())='{name}']"
            try:
                item = WebDriverWait(browser, STEP_S).until(lambda d: d.find_elements(By.XPATH, xpath))[0]
            except TimeoutException:
                shown = browser.find_element(By.TAG_NAME, "body").text
                raise AssertionError(f"Voila's home page lists no {name!r}; it shows {shown!r}") from None
            item.click()
        try:
            WebDriverWait(browser, STEP_S).until(lambda d: len(d.window_handles) > 1)
        except TimeoutException:
            raise AssertionError(f"a click on {notebook} in Voila's home page opened nothing") from None
        browser.close()
        browser.switch_to.window(next(h for h in browser.window_handles if h != home))
        assert browser.current_url.startswith(f"{url}/voila/render/{notebook}"), browser.current_url
    page = Page(browser, log)
    page.wait(lambda p: p.buttons() or p.texts(".widget-image"), f"the explorer of {notebook} to be drawn",
              NOTEBOOK_S)
    return page


# --------------------------------------------------------------------------------------------------
# gAP (gap/03_explorer): image, class, decompose, back up
# --------------------------------------------------------------------------------------------------


def _gap_oracle(page: Page):
    """The explorer's state built here from the model and images the page says it explores (its first output:
    ``"<model> stages: [...] | test images: N"``), with the notebook's seed 0 and the page's top N."""
    from xailib.data import in_memory, load_dataset
    from xailib.gap.explorer import ExplorerState
    from xailib.models import load_model

    printed = next((t for t in page.driver.execute_script(_JS_TEXTS, ".jp-OutputArea-output pre")
                    if " stages: " in t), None)
    assert printed, "the notebook did not print its model and images"
    match = re.match(r"(\S+) stages: (\[.*\]) \| test images: (\d+)", printed)
    assert match, f"unexpected first output {printed!r}"
    net = load_model(match.group(1), device="cpu")
    assert str(list(net.stage_names)) == match.group(2)
    data = in_memory(load_dataset(net.dataset, "test", n=int(match.group(3)), seed=0))
    top_n = int(page._labelled("widget-slider", "top N").find_element(By.CSS_SELECTOR, ".widget-readout").text)
    state = ExplorerState(net, data, top_n=top_n)
    short = {name: f"S{i + 1}" for i, name in enumerate(net.stage_names)}  # the notebook's stage labels
    return state, short


def _gap_expected(state, short) -> dict:
    """What the gAP explorer must show for ``state``: breadcrumb, caption, cards (channel and peak) and buttons."""
    def crumb(n):
        return state.label_of(n) if n.layer == "output" else f"{short[n.layer]} #{n.channel} @ {n.position}"

    cur = state.current
    if cur.layer == "output":
        caption = f"image {state.image_index}: decision {state.label_of(cur)}"
    else:
        caption = f"decision {short[cur.layer]} #{cur.channel} at {cur.position}, value"
    return {
        "path": "path: " + " › ".join(crumb(n) for n in state.path),
        "caption": caption,
        "cards": [(f"{short[c.layer]} #{c.channel}", f"peak (y, x) = {c.position}") for c in state.children],
        "decompose": [f"decompose #{c.channel}" for c in state.children],
        "back": state.can_go_back,
        "class": f"{state.target}: {state.class_names[state.target]}",
    }


def _gap_shown(page: Page) -> dict:
    texts = page.html_texts()
    cards = [t.split("\n") for t in texts if "peak (y, x)" in t]
    buttons = page.buttons()
    return {
        "path": next((t for t in texts if t.startswith("path: ")), None),
        "caption": next((t for t in texts if t.startswith(("image ", "decision "))), ""),
        "cards": [(lines[0], lines[-1].split(", ", 1)[1]) for lines in cards],
        "decompose": [b for b in buttons if b.startswith("decompose #")],
        "back": buttons.get("back up"),
        "class": page.selected("class"),
        "status": texts[-1] if texts else "",  # the last HTML widget: errors in red, else empty
    }


def _gap_matches(page: Page, expected: dict) -> bool:
    shown = _gap_shown(page)
    return (shown["path"] == expected["path"] and shown["caption"].startswith(expected["caption"])
            and shown["cards"] == expected["cards"] and shown["decompose"] == expected["decompose"]
            and shown["back"] == expected["back"] and shown["class"].startswith(expected["class"]))


def _gap_check(page: Page, state, short, what: str) -> dict:
    expected = _gap_expected(state, short)
    page.wait(lambda p: _gap_matches(p, expected), f"{what}: {expected}")
    shown = _gap_shown(page)
    assert shown["status"] == "", f"{what}: the explorer reports an error: {shown['status']!r}"
    return shown


def test_gap_explorer_in_voila(voila, browser):
    page = _open_voila(browser, voila, NOTEBOOKS["gap"], from_home=True)
    state, short = _gap_oracle(page)

    # 1. as served: image 0, its predicted class, the top-N channels of the last stage
    n_classes = len(state.class_names)
    shown = _gap_check(page, state, short, "the first view")
    assert shown["path"].startswith("path: class ") and len(shown["cards"]) == state.top_n
    assert [c[0] for c in shown["cards"]] == [f"S{len(short)} #{c.channel}" for c in state.children]
    options = page.options("class")
    assert len(options) == n_classes and sum(o.endswith("← predicted") for o in options) == 1
    assert page.selected("class").endswith("← predicted")
    assert page.buttons()["back up"] is False
    page.screenshot("gap_01_loaded")

    # 2. the student types another image into the image slider: its predicted class, new channels
    image = min(2, state.n_images - 1)
    before = shown["cards"]
    page.type_into_slider("image", image)
    state.select_image(image)
    shown = _gap_check(page, state, short, f"image {image}")
    assert shown["caption"].startswith(f"image {image}: ") and shown["cards"] != before
    label = state.class_names[state.label]
    assert f"true label: {state.label} '{label}'" in shown["caption"]
    page.screenshot("gap_02_image")

    # 3. ... and the runner-up class from the dropdown (scores in the option texts)
    runner_up = int(state.class_scores.argsort()[::-1][1])
    option = next(o for o in page.options("class") if o.startswith(f"{runner_up}: "))
    page.choose("class", option)
    state.select_class(runner_up)
    shown = _gap_check(page, state, short, f"class {runner_up}")
    assert shown["path"].startswith(f"path: class {runner_up} '{state.class_names[runner_up]}'")
    assert not shown["class"].endswith("← predicted")
    class_view = shown
    page.screenshot("gap_03_class")

    # 4. decompose the channel with the largest contribution: it becomes the decision, the cards its stage below
    top = state.children[0]
    page.click(f"decompose #{top.channel}")
    state.expand(0)
    shown = _gap_check(page, state, short, f"decompose #{top.channel}")
    assert shown["path"].endswith(f" › S{len(short)} #{top.channel} @ {top.position}")
    assert shown["caption"].startswith(f"decision S{len(short)} #{top.channel} at {top.position}")
    assert all(card.startswith(f"S{len(short) - 1} #") for card, _ in shown["cards"])
    assert shown["back"] is True
    page.screenshot("gap_04_decomposed")

    # 5. back up: the class decision and its cards again
    page.click("back up")
    state.back()
    shown = _gap_check(page, state, short, "back up")
    assert {k: shown[k] for k in ("path", "cards", "decompose")} == \
        {k: class_view[k] for k in ("path", "cards", "decompose")}
    assert shown["back"] is False
    page.screenshot("gap_05_back")


# --------------------------------------------------------------------------------------------------
# MACE (mace/05_explore): image, class, the concept cards and their prototypes
# --------------------------------------------------------------------------------------------------

_MACE_CARDS = ".widget-gridbox > .widget-image"


def _mace_shown(page: Page) -> dict:
    header = page.text_starting("image ") or ""
    lines = header.split("\n")
    kept = re.search(r"(\d+) kept concepts", header)
    texts = page.html_texts()
    return {
        "image": lines[0],
        "predicted": next((ln.removeprefix("predicted ") for ln in lines if ln.startswith("predicted ")), None),
        "shown": next((ln.removeprefix("shown ") for ln in lines if ln.startswith("shown ")), None),
        "kept": int(kept.group(1)) if kept else None,
        "n_cards": len(page.texts(_MACE_CARDS)),
        "options": page.options("class"),
        "selected": page.selected("class"),
        "status": texts[-1] if len(texts) > 1 else "",  # the last HTML widget: errors in red, else empty
    }


def _mace_wait(page: Page, image: int, rank: int, what: str, old_cards: list[str] | None = None):
    """Wait until the header shows ``image`` and the class of ``rank`` (as the dropdown lists it), every kept concept
    has its card and, when given, the card pictures differ from ``old_cards``; returns (shown, card digests)."""
    def ready(p):
        s = _mace_shown(p)
        ok = (s["image"] == f"image {image}" and len(s["options"]) >= rank
              and s["shown"] == s["options"][rank - 1] == s["selected"]
              and s["kept"] is not None and s["n_cards"] == max(s["kept"], 0))
        if not ok:
            return False
        digests = p.image_digests(_MACE_CARDS)
        return (s, digests) if old_cards is None or digests != old_cards else False

    shown, digests = page.wait(ready, what)
    assert shown["status"] == "", f"{what}: the explorer reports an error: {shown['status']!r}"
    return shown, digests


def test_mace_explorer_in_voila(voila, browser):
    page = _open_voila(browser, voila, NOTEBOOKS["mace"])

    # 1. as served: image 0 and its predicted class, classes listed by rank, one card per kept concept
    shown, cards0 = _mace_wait(page, 0, 1, "the first view")
    options = shown["options"]
    assert [int(re.search(r"rank (\d+)$", o).group(1)) for o in options] == list(range(1, len(options) + 1))
    probs = [float(re.search(r"p = ([0-9.]+)", o).group(1)) for o in options]
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) <= 0.0005 * len(probs) + 1e-9
    assert shown["predicted"] == options[0] and shown["kept"] >= 1
    assert len(set(cards0)) == len(cards0), "two concept cards show the same picture"
    page.screenshot("mace_01_loaded")

    # 2. one step right on the image slider: image 1, its predicted class, other cards
    page.press_on_slider("image", Keys.ARROW_RIGHT)
    shown, cards1 = _mace_wait(page, 1, 1, "image 1", old_cards=cards0)
    assert shown["predicted"] == shown["options"][0]
    page.screenshot("mace_02_image")

    # 3. the second-ranked class (Sec. 4.2: why does it get probability too?): its own concepts and prototypes
    second = shown["options"][1]
    page.choose("class", second)
    shown, cards2 = _mace_wait(page, 1, 2, f"class {second!r}", old_cards=cards1)
    assert shown["shown"].endswith("rank 2") and shown["predicted"] == shown["options"][0] != second
    assert not set(cards2) & set(cards1), "a card of the predicted class is shown again for the second class"
    page.screenshot("mace_03_class")


# --------------------------------------------------------------------------------------------------
# The additive explainer (explainer/03_explore): image, part, explainer
# --------------------------------------------------------------------------------------------------

def _explainer_wait(page: Page, what: str, *, image: int, explainer: str, part: str | None = None,
                    old_view: list[str] | None = None):
    """Wait until the header names ``image``, ``explainer`` (and ``part``) and, when given, the picture differs
    from ``old_view``; returns (header, view digests)."""
    def ready(p):
        header = p.text_starting("image ") or ""
        ok = (header.startswith(f"image {image} (") and f"{explainer} explainer" in header
              and (part is None or f"part {part}:" in header))
        if not ok:
            return False
        digests = p.image_digests(".widget-image")
        return (header, digests) if digests and (old_view is None or digests != old_view) else False

    header, digests = page.wait(ready, what)
    texts = page.html_texts()
    assert texts[-1] == "" or not texts[-1].strip(), f"{what}: the explorer reports an error: {texts[-1]!r}"
    return header, digests


def test_explainer_explorer_in_voila(voila, browser):
    page = _open_voila(browser, voila, NOTEBOOKS["explainer"])

    # 1. as served: image 0, our explainer, the performer's score beside the explainer's
    header, view0 = _explainer_wait(page, "the first view", image=0, explainer="ours")
    assert re.search(r"performer y_hat = [+-][0-9.]+, ours explainer [+-][0-9.]+", header), header
    parts = page.options("part")
    assert parts[-1] == "other" and len(parts) >= 1
    page.screenshot("explainer_01_loaded")

    # 2. one step right on the image slider: another image, another picture
    page.press_on_slider("image", Keys.ARROW_RIGHT)
    _, view1 = _explainer_wait(page, "image 1", image=1, explainer="ours", old_view=view0)

    # 3. the distillation baseline: the header says so and the pie is redrawn
    buttons = [b for b in browser.find_elements(By.CSS_SELECTOR, f"{page.root} .widget-toggle-button")
               if b.text.strip() == "baseline"]
    assert buttons, "no 'baseline' toggle in the explorer"
    buttons[0].click()
    _, view2 = _explainer_wait(page, "the baseline explainer", image=1, explainer="baseline", old_view=view1)

    # 4. another part: its outline on the image
    if len(parts) > 1:
        page.choose("part", parts[-1])
        _explainer_wait(page, f"part {parts[-1]}", image=1, explainer="baseline", part=parts[-1], old_view=view2)
    page.screenshot("explainer_02_stepped")


# --------------------------------------------------------------------------------------------------
# JupyterLab: Run > Run All Cells renders the widget, not its text fallback
# --------------------------------------------------------------------------------------------------

FALLBACKS = ("VBox(children=", "Loading widget...", "Error displaying widget", "Explorer object at 0x")


@pytest.mark.parametrize("paper", list(NOTEBOOKS))
def test_explorer_renders_in_jupyterlab(lab, browser, paper):
    url, token, log = lab
    notebook = NOTEBOOKS[paper]
    # a workspace of its own, reset: this notebook alone is open, so Run All Cells runs this one (in the shared
    # default workspace the other explorer's tab could keep the focus)
    browser.get(f"{url}/lab/workspaces/xailib-{paper}/tree/{notebook}?reset&token={token}")
    page = Page(browser, log, root=".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output > .widget-vbox")
    panel = Page(browser, log, root=".jp-NotebookPanel:not(.lm-mod-hidden)")
    panel.wait(lambda p: p.driver.find_elements(By.CSS_SELECTOR, f"{p.root} .jp-Notebook-ExecutionIndicator"
                                                                 "[data-status='idle']"),
               f"{notebook} open with an idle kernel", SERVER_START_S)
    assert not panel.texts(".jp-OutputArea-output"), "the served copy should have no outputs yet"

    # Run > Run All Cells, as a student does
    menu = next(m for m in browser.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if m.text.strip() == "Run")
    menu.click()
    item = panel.wait(lambda p: [e for e in p.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu .lm-Menu-itemLabel")
                                 if e.text.strip() == "Run All Cells"], "the Run menu")[0]
    item.click()

    # the explorer is a live widget: its controls are there, and none of the text fallbacks anywhere
    page.wait(lambda p: p.texts(".widget-dropdown select") and (p.buttons() or p.texts(".widget-image")),
              f"the explorer widget of {notebook}", NOTEBOOK_S)
    outputs = "\n".join(panel.texts(".jp-OutputArea-output"))
    assert not [f for f in FALLBACKS if f in outputs], f"a widget fell back to text: {outputs[:2000]}"
    assert page.texts(".widget-slider .widget-label")[0] == "image"
    assert browser.find_elements(By.CSS_SELECTOR, f"{page.root}.jupyter-widgets")
    page.screenshot(f"lab_{paper}_01_widget")

    # ... and it answers: the kernel behind it redraws on a click (gAP) / a class change (MACE) / an image (explainer)
    if paper == "gap":
        state, short = _gap_oracle(page)
        _gap_check(page, state, short, "the first view in JupyterLab")
        page.click(f"decompose #{state.children[0].channel}")
        state.expand(0)
        _gap_check(page, state, short, f"decompose #{state.current.channel} in JupyterLab")
    elif paper == "explainer":
        _, view = _explainer_wait(page, "the first view in JupyterLab", image=0, explainer="ours")
        page.press_on_slider("image", Keys.ARROW_RIGHT)
        _explainer_wait(page, "image 1 in JupyterLab", image=1, explainer="ours", old_view=view)
    else:
        shown, cards = _mace_wait(page, 0, 1, "the first view in JupyterLab")
        page.choose("class", shown["options"][1])
        _mace_wait(page, 0, 2, f"class {shown['options'][1]!r} in JupyterLab", old_cards=cards)
    page.screenshot(f"lab_{paper}_02_clicked")
    assert not [f for f in FALLBACKS if f in "\n".join(panel.texts(".jp-OutputArea-output"))]
