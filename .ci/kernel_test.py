"""Run every notebook top to bottom in a real Jupyter kernel (ipykernel, through nbclient), as a reader does in JupyterLab.

It skips exactly the cells `nbdev_test` skips (cells flagged with a `tst_flags` flag not asked for, `#| eval: false`, the
`nbdev_export()` cell) and fails, naming the notebook and the cell, on:
- an error in any cell;
- a progress bar printed as text: in a kernel, tqdm must render as a widget (ipywidgets);
- a warning printed to a reader (`...Warning:` or IProgress lines in a cell's stderr).
It prints, and writes to `--timings`, each notebook's run time.

    python .ci/kernel_test.py [--n_workers 2] [--flags slow] [--path nbs/07_viz.ipynb] [--selftest]

`--selftest` first checks the checker: a copy of a notebook with a `raise` cell must fail, naming that cell.
"""
import argparse, os, re, shutil, sys, tempfile, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbdev.config import get_config
from nbdev.doclinks import nbglob
from nbdev.process import extract_directives

TEXT_BAR = re.compile(r'\d+%\|.*\|\s*\d+/\d+ \[')                     # tqdm's text bar: " 40%|####  | 4/10 [00:01<..."
ANSI = re.compile(r'\x1b\[[0-9;]*m')                                    # colours in tracebacks
WARNING = re.compile(r'^(.*Warning: .*|.*IProgress not found.*)$', re.M)

def skipped(cell, flags:set)->bool:
    "Whether nbdev_test would skip this cell."
    if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source: return True
    directives = extract_directives(cell, remove=False)
    if directives.get('eval:', [''])[0].lower() == 'false': return True
    return bool(flags & set(directives))

def first_line(cell)->str: return next((l for l in cell.source.splitlines() if l.strip() and not l.startswith('#|')), '')[:90]

def run_notebook(path:str, skip_flags:list, timeout:int)->dict:
    "Execute one notebook in a fresh kernel; {'path', 'seconds', 'problems': [...]}."
    path, flags = Path(path), set(skip_flags)
    nb = nbformat.read(path, as_version=4)
    ran = [i for i, c in enumerate(nb.cells) if not skipped(c, flags)]
    run = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[nb.cells[i] for i in ran])
    client = NotebookClient(run, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    start, problems = time.perf_counter(), []
    try: client.execute()
    except CellExecutionError as e:
        bad = next((k for k, c in enumerate(run.cells) if any(o.get('output_type') == 'error' for o in c.get('outputs', []))), None)
        where = f"cell {ran[bad]} ({first_line(run.cells[bad])!r})" if bad is not None else 'a cell'
        problems.append(f"{path.name}, {where}: {ANSI.sub('', str(e)).strip().splitlines()[-1][:300]}")
    except Exception as e: problems.append(f"{path.name}: the kernel failed ({type(e).__name__}: {e})")
    for k, cell in enumerate(run.cells):
        for out in cell.get('outputs', []):
            if out.get('output_type') != 'stream' or out.get('name') != 'stderr': continue
            text = out.get('text', '')
            if TEXT_BAR.search(text): problems.append(f"{path.name}, cell {ran[k]} ({first_line(cell)!r}): a progress bar printed as text, not as a widget")
            for line in WARNING.findall(text): problems.append(f"{path.name}, cell {ran[k]} ({first_line(cell)!r}): prints a warning: {line.strip()[:200]}")
    return dict(path=str(path), seconds=time.perf_counter() - start, problems=problems)

def selftest(skip_flags:list, timeout:int):
    "A copy of a notebook with a raising cell must fail, naming the notebook and the cell."
    folder = Path(get_config().nbs_path)
    with tempfile.TemporaryDirectory(dir=folder, prefix='_selftest') as tmp:   # beside the notebooks (relative paths hold); '_': nbglob skips it
        copy = Path(tmp)/'broken_copy.ipynb'
        nb = nbformat.read(folder/'04_loss.ipynb', as_version=4)
        nb.cells.insert(4, nbformat.v4.new_code_cell("raise RuntimeError('a deliberately broken cell')"))
        nbformat.write(nb, copy)
        result = run_notebook(str(copy), skip_flags, timeout)
    said = ' '.join(result['problems'])
    if not ('broken_copy.ipynb, cell 4' in said and 'a deliberately broken cell' in said):
        sys.exit(f"kernel_test --selftest: a raising cell was not reported as it should be; got: {said or 'no problem at all'}")
    print(f"selftest: the broken copy fails as it should: {said}")

def main():
    cfg = get_config()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--path', help='one notebook (default: every notebook nbdev_test would run)')
    ap.add_argument('--flags', default='', help='space-separated test flags to run that are normally skipped (e.g. slow)')
    ap.add_argument('--n_workers', type=int, default=2, help='notebooks run at once, each in its own kernel')
    ap.add_argument('--timeout', type=int, default=1800, help='seconds one cell may run')
    ap.add_argument('--timings', default='hdc_runs/kernel_test/timings.md', help='where the timings table goes')
    ap.add_argument('--selftest', action='store_true', help='first check that a broken cell makes the check fail')
    args = ap.parse_args()
    skip_flags = [f for f in cfg.tst_flags.split() if f not in args.flags.split()]
    if args.selftest: selftest(skip_flags, args.timeout)
    paths = [Path(args.path)] if args.path else [Path(p) for p in nbglob(cfg.nbs_path, as_path=True)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.n_workers) as pool:
        results = list(pool.map(run_notebook, map(str, paths), [skip_flags] * len(paths), [args.timeout] * len(paths)))
    rows = ['| notebook | seconds in a kernel (2 cores, beside another notebook) |', '|---|---|'] + [f"| `{Path(r['path']).name}` | {r['seconds']:.0f} |" for r in results]
    table = '\n'.join(rows) + f"\n\nAll {len(results)} notebooks: {time.perf_counter() - start:.0f} s of wall time with {args.n_workers} at once.\n"
    print(table)
    Path(args.timings).parent.mkdir(parents=True, exist_ok=True); Path(args.timings).write_text(table)
    problems = [p for r in results for p in r['problems']]
    if problems: sys.exit("kernel_test: " + str(len(problems)) + " problem(s):\n  " + '\n  '.join(problems))
    print('kernel_test: every notebook ran in a kernel without errors, warnings or text progress bars')

if __name__ == '__main__': main()
