"""The widgets in a real browser: JupyterLab on localhost, Debian's Chromium driven by Playwright.

    python scripts/browser_check.py [--out browser-screenshots] [--only 02,05]

For each notebook with a widget (:data:`WIDGETS`): a copy of the notebook without outputs and
cut after the widget's cell is written into a temporary folder that a JupyterLab server (its
own port, token, settings and workspace folders) serves; the page opens it, runs every cell
(Run > Run All Cells) with the kernel at ``LLMLAB_PRESET=smoke``, waits for the widget to render,
then changes its controls one by one (dropdown, slider, button) and waits for the widget's
output to change after each. A screenshot of each widget after its last change goes to
``--out`` (``NN_name.png``); a failure saves ``NN_name_FAILED.png`` of the whole page and says
which step of which widget failed and what the page showed.

Nothing waits a fixed time: every step waits for a selector or a condition on the page, with a
timeout. Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and ``pip install
playwright`` (no browser download); ``scripts/browser_check.sh`` installs both when missing.
The last line of stdout is one JSON object: per widget, seconds and the changes seen.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Step:
    """One change of a control and the output change it must cause."""

    what: str        # said in the failure message and the JSON line
    action: str      # "select" (a dropdown's next option), "slider" (type into the readout),
    #                  "click" (a button), "type" (a text box, then Enter)
    target: str      # Playwright selector inside the widget's output area
    value: str = ""  # the slider value or the text typed
    expect: str = ""  # text that must appear in the output after the change ("" = any change)
    image: bool = False  # the change must redraw an image (a chart), not only text
    clear: str = ""      # a text box to empty first (typed text wins over a dropdown)
    then_click: str = ""  # a button to press after the change (one that acts on the change)


@dataclass
class Widget:
    """A notebook's widget: the cell that shows it and the changes to try."""

    notebook: str    # file name under notebooks/
    name: str        # screenshot name
    marker: str      # a substring of the widget cell's source (the first code cell holding it)
    steps: list[Step] = field(default_factory=list)


WIDGETS = [
    Widget("02_pretraining.ipynb", "next_token", "next_token_widget(model", [
        Step("pick another context in the dropdown", "select", ".widget-dropdown select", image=True),
        Step("press 'sample a continuation'", "click", "button:has-text('sample')"),
        Step("move the temperature slider to 0.5", "slider", ".widget-slider .widget-readout",
             "0.5", image=True),
    ]),
    Widget("03_scaling_laws.ipynb", "chinchilla", "calc.calculator(", [
        Step("give the budget in dollars", "click", ".widget-toggle-buttons button:has-text('dollars')"),
        Step("pick another fit in the dropdown", "select", ".widget-dropdown:has-text('fit') select"),
        Step("move the model-size slider to 0.5", "slider",
             ".widget-slider:has-text('model size') .widget-readout", "0.5", "over-trained"),
    ]),
    Widget("04_sft.ipynb", "compare", "compare_widget(base", [
        Step("type a question and press Generate", "type", ".widget-text input",
             "What colour is the sky?", "What colour is the sky?",
             then_click="button:has-text('Generate')"),
        Step("pick another prompt (text cleared) and press Generate", "select",
             ".widget-dropdown select", clear=".widget-text input",
             then_click="button:has-text('Generate')"),
    ]),
    Widget("05_reward_model.ipynb", "quiz", "quiz_widget(items)", [
        Step("answer A", "click", "button:has-text('A scores higher')", expect="The RM scores"),
        Step("next question", "click", "button:has-text('Next question')", expect="Question 2 of"),
    ]),
    Widget("06_ppo.ipynb", "ppo_replies", "W.interact(show_iteration", [
        Step("move the iteration slider to 0", "slider", ".widget-slider .widget-readout", "0",
             "iteration 0"),
    ]),
    Widget("09_whole_pipeline.ipynb", "journey", "journey_widget(models", [
        Step("pick another prompt and press Generate (the four replies are scored)", "select",
             ".widget-dropdown select", expect="gold", then_click="button:has-text('Generate')"),
        Step("type a question and press Generate (not scored)", "type", ".widget-text input",
             "What colour is the sky?", "What colour is the sky?",
             then_click="button:has-text('Generate')"),
    ]),
]


def widget_cell_index(nb: dict, marker: str) -> int:
    """Index of the first code cell whose source holds ``marker`` (ValueError if none)."""
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code" and marker in "".join(cell["source"]):
            return i
    raise ValueError(f"no code cell holds {marker!r}: update WIDGETS in scripts/browser_check.py")


def cut_notebook(nb: dict, marker: str) -> dict:
    """The notebook up to and including the widget's cell, without outputs or widget state."""
    i = widget_cell_index(nb, marker)
    cells = []
    for cell in nb["cells"][:i + 1]:
        cell = dict(cell)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
    meta = {k: v for k, v in nb["metadata"].items() if k != "widgets"}
    return dict(nb, cells=cells, metadata=meta)


# --- the JupyterLab server ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_settings(settings_dir: Path) -> None:
    """User settings for a test run: every cell in the DOM (no windowing, so the widget cell
    renders off-screen too), no news pop-up, no update check."""
    files = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
            {"fetchNews": "false", "checkForUpdates": False},
    }
    for rel, data in files.items():
        path = settings_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


def start_lab(root: Path, port: int, token: str, log) -> subprocess.Popen:
    env = dict(os.environ, LLMLAB_PRESET="smoke", PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(root / ".workspaces"),
        JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    write_settings(root / ".settings")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.root_dir={root / 'nb'}", f"--IdentityProvider.token={token}",
           "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--allow-root"]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root / "nb")


def api(port: int, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        body = r.read()
    return json.loads(body) if body else None


def wait_for_server(proc: subprocess.Popen, port: int, token: str, timeout: float, log_path: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {proc.returncode}; its log:\n"
                               + log_path.read_text()[-3000:])
        try:
            api(port, token, "/api/status")
            return
        except OSError:
            time.sleep(0.2)   # polling a socket, not waiting for the page
    raise RuntimeError(f"JupyterLab did not answer on port {port} within {timeout:.0f} s; log:\n"
                       + log_path.read_text()[-3000:])


def start_session(port: int, token: str, notebook: str) -> None:
    """A kernel for ``notebook`` started through the REST API, so the page attaches to it
    instead of asking which kernel to start."""
    body = json.dumps({"path": notebook, "type": "notebook", "name": notebook,
                       "kernel": {"name": "python3"}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/sessions", data=body, method="POST",
                                 headers={"Authorization": f"token {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def shutdown_kernels(port: int, token: str) -> None:
    for k in api(port, token, "/api/kernels"):
        api(port, token, f"/api/kernels/{k['id']}", method="DELETE")


# --- the page ----------------------------------------------------------------------------------

# state of the page, polled by wait_for_function: the last cell's output text and image
# sources, whether it holds a rendered widget, and any error output
PAGE_STATE = """() => {
  const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell');
  const errors = [...document.querySelectorAll(
      '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
      .map(e => e.innerText).filter(t => /Error|Traceback/.test(t));
  const dlg = document.querySelector('.jp-Dialog');
  const dialog = dlg ? dlg.innerText.slice(0, 300) : '';
  const last = cells[cells.length - 1];
  const out = last ? last.querySelector('.jp-Cell-outputArea') : null;
  if (!out) return {errors, dialog, widget: false, text: '', imgs: '', jsError: ''};
  const jsError = [...out.querySelectorAll('.jp-RenderedText, pre')].map(e => e.innerText)
      .filter(t => /javascript error|not registered|Error displaying widget/i.test(t)).join('\\n');
  return {errors, jsError, dialog,
          widget: !!out.querySelector('.jupyter-widgets, .widget-box, .lm-Widget.jupyter-widgets'),
          text: out.innerText,
          imgs: [...out.querySelectorAll('img')].map(i => i.src.length + ':' + i.src.slice(-64)).join('|'),
          loaded: [...out.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)};
}"""


# the notebook's panel is connected to its kernel and the kernel is idle (the server runs with
# expose_app_in_browser, so the page can read JupyterLab's own session state)
KERNEL_READY = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === 'connected' && k.status === 'idle';
}"""


class CheckFailed(AssertionError):
    pass


def run_widget(page, base: str, w: Widget, out_dir: Path, timeout_ms: int) -> dict:
    """Open ``w``'s notebook, run all, wait for the widget, try every step; the widget's record."""
    t0 = time.monotonic()
    stem = f"{w.notebook[:2]}_{w.name}"
    step_name = "open the notebook"
    try:
        # a workspace of its own: only this notebook open, nothing restored from the last one
        page.goto(f"{base}/lab/workspaces/{stem}/tree/{w.notebook}?reset", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell",
                               timeout=timeout_ms)
        step_name = "wait for the page to attach to an idle kernel"
        page.wait_for_function(KERNEL_READY, timeout=timeout_ms, polling=200)
        step_name = "run all cells (Run > Run All Cells)"
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        step_name = "wait for the widget to render"
        state = wait_state(page, "s => s.widget || s.errors.length > 0 || !!s.jsError", timeout_ms)
        fail_on_errors(state, "while running the notebook's cells")
        out = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").last.locator(
            ".jp-Cell-outputArea")
        # the widget's first output (a chart, a table, a reply) comes while its cell runs:
        # wait for the kernel to finish and every image to be decoded
        step_name = "wait for the widget's first output (kernel idle, images decoded)"
        page.wait_for_function(KERNEL_READY, timeout=timeout_ms, polling=200)
        fail_on_errors(wait_state(page, "s => s.loaded", timeout_ms), "while the widget drew")
        changes = []
        for step in w.steps:
            step_name = step.what
            before = page.evaluate(PAGE_STATE)
            ctl = out.locator(step.target).first
            ctl.wait_for(state="visible", timeout=timeout_ms)
            if step.action == "select":
                options = ctl.locator("option").all_inner_texts()
                current = ctl.input_value()
                values = ctl.locator("option").evaluate_all("os => os.map(o => o.value)")
                nxt = values[(values.index(current) + 1) % len(values)] if current in values else values[-1]
                if step.clear:
                    out.locator(step.clear).first.fill("")
                ctl.select_option(nxt)
                detail = f"option {options[values.index(nxt)]!r}"
            elif step.action == "slider":
                ctl.click()
                page.keyboard.press("Control+A")
                page.keyboard.type(step.value)
                page.keyboard.press("Enter")
                detail = f"readout {step.value}"
            elif step.action == "click":
                ctl.click()
                detail = "clicked"
            elif step.action == "type":
                ctl.fill(step.value)
                ctl.press("Enter")
                detail = f"typed {step.value!r}"
            else:
                raise ValueError(f"unknown action {step.action!r}")
            if step.then_click:
                out.locator(step.then_click).first.click()
            cond = ("s => s.errors.length > 0 || ("
                    + ("s.imgs !== before.imgs && s.imgs !== '' && s.loaded" if step.image
                       else "(s.text !== before.text || s.imgs !== before.imgs)")
                    + (f" && s.text.includes({json.dumps(step.expect)})" if step.expect else "") + ")")
            state = wait_state(page, cond, timeout_ms, before)
            fail_on_errors(state, f"after '{step.what}'")
            # the callback has run to its end before the next change
            page.wait_for_function(KERNEL_READY, timeout=timeout_ms, polling=200)
            state = wait_state(page, "s => s.loaded", timeout_ms)
            fail_on_errors(state, f"after '{step.what}'")
            changes.append({"step": step.what, "control": detail,
                            "text_changed": state["text"] != before["text"],
                            "image_changed": state["imgs"] != before["imgs"]})
        step_name = "screenshot (every image decoded)"
        wait_state(page, "s => s.loaded", timeout_ms)
        out.scroll_into_view_if_needed()
        out_dir.mkdir(parents=True, exist_ok=True)
        out.screenshot(path=str(out_dir / f"{stem}.png"))
        return {"widget": stem, "seconds": round(time.monotonic() - t0, 1), "changes": changes}
    except Exception as exc:
        out_dir.mkdir(parents=True, exist_ok=True)
        shot = out_dir / f"{stem}_FAILED.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
        except Exception:  # the page itself may be gone
            shot = None
        try:
            seen = page.evaluate(PAGE_STATE)
        except Exception:
            seen = {}
        raise CheckFailed(
            f"{w.notebook} widget '{w.name}': step '{step_name}' failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n"
            f"  the widget cell's output showed: {seen.get('text', '')[-800:]!r}\n"
            f"  the last error on the page: {(seen.get('errors') or [''])[-1][-1500:]}"
            f"{seen.get('jsError', '')}\n"
            f"  screenshot: {shot}") from exc


def wait_state(page, predicate: str, timeout_ms: int, before: dict | None = None) -> dict:
    """Wait until ``predicate(state)`` holds on the page; return the state.

    A "Select Kernel" dialog (JupyterLab asks when Run All comes before the page has attached
    to the kernel) is answered with the notebook's kernel and the wait goes on; any other
    dialog is a failure that names it."""
    js = (f"([before]) => {{ const s = ({PAGE_STATE})(); "
          f"return (s.dialog || ({predicate})(s)) ? s : null; }}")
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        left = max(1, int((deadline - time.monotonic()) * 1000))
        state = page.wait_for_function(js, arg=[before or {}], timeout=left, polling=200).json_value()
        if not state.get("dialog"):
            return state
        if "Select Kernel" not in state["dialog"]:
            raise CheckFailed(f"JupyterLab showed a dialog: {state['dialog']!r}")
        page.locator(".jp-Dialog").get_by_role("button", name="Select", exact=True).click()
        page.locator(".jp-Dialog").wait_for(state="detached", timeout=left)


def fail_on_errors(state: dict, when: str) -> None:
    if state.get("errors"):
        lines = [line for line in state["errors"][-1].splitlines() if line.strip()]
        raise CheckFailed(f"an error output {when}: {lines[-1] if lines else '?'}")
    if state.get("jsError"):
        raise CheckFailed(f"the widget did not render {when}: {state['jsError'][:500]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "browser-screenshots"), help="screenshot folder")
    ap.add_argument("--only", default="", help="comma-separated notebook numbers, e.g. 02,05")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per wait")
    ap.add_argument("--chromium", default=CHROMIUM)
    args = ap.parse_args(argv)

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("browser check: the playwright package is missing (pip install playwright; "
              "scripts/browser_check.sh installs it)", file=sys.stderr)
        return 2
    if not Path(args.chromium).exists():
        print(f"browser check: no Chromium at {args.chromium} (apt-get install -y chromium; "
              "scripts/browser_check.sh installs it)", file=sys.stderr)
        return 2
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    widgets = [w for w in WIDGETS if not only or w.notebook[:2] in only]
    out_dir = Path(args.out)
    timeout_ms = int(args.timeout * 1000)
    records, t_start = [], time.monotonic()
    with tempfile.TemporaryDirectory(prefix="llmlab-browser-") as tmp:
        root = Path(tmp)
        (root / "nb").mkdir()
        for w in widgets:
            nb = json.loads((ROOT / "notebooks" / w.notebook).read_text())
            (root / "nb" / w.notebook).write_text(json.dumps(cut_notebook(nb, w.marker)))
        port, token = free_port(), secrets.token_hex(16)
        log_path = root / "jupyterlab.log"
        with open(log_path, "w") as log:
            proc = start_lab(root, port, token, log)
            try:
                wait_for_server(proc, port, token, args.timeout, log_path)
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu",
                                                       "--disable-dev-shm-usage"])
                    ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
                    # the token once as a cookie-setting login, then plain URLs
                    page = ctx.new_page()
                    page.goto(f"http://127.0.0.1:{port}/lab?token={token}", wait_until="domcontentloaded")
                    page.wait_for_selector("#jp-main-dock-panel", timeout=timeout_ms)
                    page.close()
                    for w in widgets:
                        page = ctx.new_page()
                        try:
                            start_session(port, token, w.notebook)
                            rec = run_widget(page, f"http://127.0.0.1:{port}", w, out_dir, timeout_ms)
                        finally:
                            page.close()
                            shutdown_kernels(port, token)
                        print(f"ok  {rec['widget']:16s} {rec['seconds']:6.1f} s  "
                              + "; ".join(c["step"] for c in rec["changes"]), flush=True)
                        records.append(rec)
                    browser.close()
            except CheckFailed as exc:
                errors = [l for l in log_path.read_text().splitlines() if l.startswith("[E")]
                print(f"BROWSER CHECK FAILED: {exc}" + ("\n  JupyterLab's errors:\n  "
                      + "\n  ".join(errors[-8:]) if errors else ""), file=sys.stderr)
                return 1
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(json.dumps({"check": "browser", "seconds": round(time.monotonic() - t_start, 1),
                      "screenshots": str(out_dir), "widgets": records}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
