"""JupyterLab in a real browser: open a notebook, run all its cells from the menu, and check what the reader sees.

Starts `jupyter lab` on 127.0.0.1 with a random token (and its own settings and workspace folders), drives Debian's
headless chromium through Selenium (pointed at /usr/bin/chromium and /usr/bin/chromedriver: nothing is downloaded),
clicks Run > Run All Cells, waits until every code cell has run and the kernel is idle, then checks in the page:
no error output, as many rendered images as the committed notebook holds, and a progress widget where a progress
bar runs. Saves a screenshot (an artifact, not committed) and stops the server it started, by its process id.

    python .ci/browser_check.py [--notebook nbs/07_viz.ipynb] [--screenshot hdc_runs/browser_check/07_viz.png]
"""
import argparse, json, os, re, shutil, signal, secrets, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def committed_images(path:Path)->int:
    "Images among the committed outputs of the notebook: what a full run must render again."
    nb = json.loads(path.read_text())
    return sum('image/png' in o.get('data', {}) for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []))

def wait_for(what:str, check, timeout:float, every:float=0.5):
    "Poll `check` until it returns something true; fail naming `what` after `timeout` seconds."
    end = time.time() + timeout
    while time.time() < end:
        try:
            got = check()
            if got: return got
        except Exception: pass
        time.sleep(every)
    raise TimeoutError(f"browser_check: timed out after {timeout:.0f} s waiting for {what}")

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--notebook', default='nbs/07_viz.ipynb')
    ap.add_argument('--screenshot', default=None, help='PNG of the page after the run (default: hdc_runs/browser_check/<notebook>.png)')
    ap.add_argument('--timeout', type=int, default=900, help='seconds the whole run of the notebook may take')
    ap.add_argument('--chromium', default='/usr/bin/chromium'); ap.add_argument('--chromedriver', default='/usr/bin/chromedriver')
    args = ap.parse_args()
    root, notebook = Path.cwd(), Path(args.notebook).resolve()
    shot = Path(args.screenshot or f'hdc_runs/browser_check/{notebook.stem}.png')
    expected_images = committed_images(notebook)
    start, token, port = time.time(), secrets.token_hex(16), free_port()
    work = Path(tempfile.mkdtemp())
    settings = work/'settings'/'@jupyterlab'/'notebook-extension'
    settings.mkdir(parents=True)
    (settings/'tracker.jupyterlab-settings').write_text(json.dumps({'windowingMode': 'none'}))   # every cell in the page, not only the visible ones
    (work/'settings'/'@jupyterlab'/'docmanager-extension').mkdir(parents=True)
    (work/'settings'/'@jupyterlab'/'docmanager-extension'/'plugin.jupyterlab-settings').write_text(json.dumps({'autosave': False}))
    opened = notebook.with_name(f'_browser_check_{notebook.name}')   # a copy beside it (its relative paths hold; '_': nbdev skips it), deleted after
    shutil.copy(notebook, opened)
    env = os.environ | dict(JUPYTERLAB_SETTINGS_DIR=str(work/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(work/'workspaces'))
    log = open(work/'jupyter.log', 'w')
    server = subprocess.Popen([sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', f'--IdentityProvider.token={token}',
                               f'--ServerApp.root_dir={root}', '--allow-root'], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    box = {}                                                    # holds the browser once it is started
    try:
        check(box, args, root, opened, shot, expected_images, start, token, port)
    except TimeoutError as e:
        if box.get('driver'): shot.parent.mkdir(parents=True, exist_ok=True); box['driver'].save_screenshot(str(shot))
        sys.exit(f"{e} (screenshot of the page: {shot})")
    finally:
        if box.get('driver'): box['driver'].quit()
        os.killpg(server.pid, signal.SIGTERM)                   # the server this check started, and only it
        try: server.wait(20)
        except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL)
        opened.unlink(missing_ok=True)

def check(box, args, root, notebook, shot, expected_images, start, token, port):
    "Open the notebook, run it from the menu, check the page."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    wait_for('the Jupyter server', lambda: urllib.request.urlopen(f'http://127.0.0.1:{port}/api/status?token={token}', timeout=2).status == 200, 120)
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1500,2400'): options.add_argument(a)
    driver = box['driver'] = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    driver.get(f'http://127.0.0.1:{port}/lab/tree/{notebook.relative_to(root)}?token={token}')
    cells = wait_for('the notebook to open', lambda: driver.find_elements(By.CSS_SELECTOR, '.jp-NotebookPanel .jp-CodeCell'), 120)
    wait_for('the kernel to start', lambda: 'Idle' in driver.find_element(By.CSS_SELECTOR, '.jp-NotebookPanel-toolbar').get_attribute('innerHTML')
             or driver.find_element(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator').get_attribute('data-status') == 'idle', 120)
    prompts = lambda: [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, '.jp-CodeCell .jp-InputPrompt')]
    numbered = lambda p: p.startswith('[') and p[1:-2].strip().isdigit()
    idle = lambda: driver.find_element(By.CSS_SELECTOR, '.jp-Notebook-ExecutionIndicator').get_attribute('data-status') == 'idle'
    wait_for('the Run menu', lambda: driver.find_element(By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='Run']"), 30).click()
    wait_for('Run All Cells', lambda: driver.find_element(By.XPATH, "//div[contains(@class, 'lm-Menu-itemLabel') and text()='Run All Cells']"), 30).click()
    wait_for('the first cell to run', lambda: any(numbered(p) for p in prompts()), 120)
    bars = lambda: len(driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output .jupyter-widgets'))
    seen = {'widgets': 0}                     # progress bars that close when done (leave=False) are seen only while they run
    failed = lambda: driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"] .ansi-red-fg')
    def ended():                              # idle, nothing running or queued, and every cell run or an error shown
        seen['widgets'] = max(seen['widgets'], bars())
        now = prompts()
        return idle() and not any('*' in p for p in now) and (all(numbered(p) for p in now) or failed())
    wait_for('the run to end', lambda: ended() and (time.sleep(3) or ended()), args.timeout, every=0.5)   # idle twice, 3 s apart
    time.sleep(2)                             # let the last outputs render
    code_cells = driver.find_elements(By.CSS_SELECTOR, '.jp-NotebookPanel .jp-CodeCell')
    source = lambda cell: next((l for l in cell.find_element(By.CSS_SELECTOR, '.jp-InputArea-editor').text.splitlines() if l.strip() and not l.startswith('#|')), '')[:80]
    errors = [f"code cell {i} ({source(cell)!r}): {e.text.strip().splitlines()[-1][:200]}" for i, cell in enumerate(code_cells)
              for e in cell.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
              if e.text.strip() and ('Traceback' in e.text or 'Error' in e.text.strip().splitlines()[-1])]
    not_run = [i for i, p in enumerate(prompts()) if not numbered(p)]
    images = len(driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output img'))
    widgets = max(seen['widgets'], bars())
    text_bars = [e.text[:80] for e in driver.find_elements(By.CSS_SELECTOR, '.jp-OutputArea-output') if re.search(r'\d+%\|', e.text)]
    shot.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(shot))
    problems = errors + ([f"code cells {not_run} did not run"] if not_run else []) + \
               ([f"{images} images rendered, the committed notebook holds {expected_images}"] if images != expected_images else []) + \
               (["no progress widget in the page (tqdm printed text, or ipywidgets is missing)"] if not widgets else []) + \
               ([f"a progress bar printed as text: {text_bars[0]!r}"] if text_bars else [])
    print(f"{notebook.name}: {len(code_cells) - len(not_run)} of {len(code_cells)} code cells run from the menu, {images} images, {widgets} progress widget(s), {len(errors)} errors; "
          f"{time.time() - start:.0f} s in all; screenshot {shot}")
    if problems: sys.exit(f"browser_check: {notebook.name.removeprefix('_browser_check_')}: " + '; '.join(problems))
    print('browser_check: passed')

if __name__ == '__main__': main()
