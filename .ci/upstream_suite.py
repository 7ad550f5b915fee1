"""Run ultralytics' own tests (the tests/ of the installed release's sdist) with ultra-prune off, then on, and fail on
every test id that passes with the plugin off but not with it on.

    .venv/bin/python .ci/upstream_suite.py [--timeout S] [--only off|on] [-- extra pytest args]

Everything the tests would download is made here, offline (upstream_assets.py, by stock ultralytics). The one
download is the sdist itself (``pip download --no-deps --no-binary :all:``), once, into .ul/upstream/<version>/.
Layout (all git-ignored):

    .ul/upstream/<version>/tests/      ultralytics' tests, unpacked from the sdist
    .ul/upstream/<version>/assets/     the generated weights and datasets (remade when upstream_assets.py changes)
    .ul/upstream/<version>/run/        one run's weights_dir, datasets_dir, runs_dir and YOLO_CONFIG_DIR (copied fresh
                                       for each run, at the same path, so parametrized test ids match across runs)
    .ul/upstream/<version>/results/    {off,on}.xml (junit, with captured output), {off,on}.log (pytest output)

Under pytest, ultralytics saves runs in <site-packages>/tests/tmp/runs whatever the settings say; the run folders
each run adds there are removed after it. The summary lists, per regressed id, the first line of the failure and, for
a failed `yolo` subprocess, the last error line it printed. Exit status: 0, or 1 on a regression, on a run that did
not complete, or when nothing passes with the plugin off (a broken harness).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
# The files and tests run: training, validation, prediction, export, resume and distillation, and the model building,
# data and results code they go through. Heavy or network-bound ones are deselected in upstream_plugin.DESELECT.
FILES = ("tests/test_engine.py", "tests/test_cli.py", "tests/test_python.py")


def log(msg: str = "") -> None:
    print(msg, flush=True)


def fetch_tests(base: Path, version: str) -> None:
    """Unpack tests/ of the ultralytics ``version`` sdist into ``base/tests`` (downloaded once with pip)."""
    if (base / "tests" / "conftest.py").is_file():
        return
    sdist_dir = base / "sdist"
    sdist = next(sdist_dir.glob(f"ultralytics-{version}.tar.gz"), None)
    if sdist is None:
        subprocess.run([PY, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(sdist_dir),
                        f"ultralytics=={version}"], check=True)
        sdist = next(sdist_dir.glob(f"ultralytics-{version}.tar.gz"))
    prefix = f"ultralytics-{version}/tests/"
    tmp = base / "tests.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile() and ".." not in m.name]
        for m in members:
            m.name = m.name[len(prefix):]
        try:
            tar.extractall(tmp, members=members, filter="data")
        except TypeError:  # Python < 3.11.4: no filter=; the members are plain files below tests/ already
            tar.extractall(tmp, members=members)
    assert (tmp / "conftest.py").is_file(), f"no tests/conftest.py in {sdist}"
    shutil.rmtree(base / "tests", ignore_errors=True)
    tmp.rename(base / "tests")
    log(f"unpacked {len(members)} files of {sdist.name}:tests/ into {base / 'tests'}")


def ensure_pytest_timeout() -> None:
    if importlib.util.find_spec("pytest_timeout") is None:
        subprocess.run([PY, "-m", "pip", "install", "-q", "pytest-timeout"], check=True)


def stock_env(cfg_dir: Path) -> dict:
    """The environment of a stock-ultralytics child (plugin off), with its own settings dir."""
    return {**os.environ, "ULTRA_PRUNE_DISABLE": "1", "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cfg_dir)}


def make_assets(base: Path, version: str) -> Path:
    """Generate the weights and datasets into ``base/assets`` unless they are there for this generator."""
    assets = base / "assets"
    stamp = hashlib.sha256((HERE / "upstream_assets.py").read_bytes() + version.encode()).hexdigest()
    if (assets / "stamp").is_file() and (assets / "stamp").read_text() == stamp:
        return assets
    shutil.rmtree(assets, ignore_errors=True)
    t = time.time()
    subprocess.run([PY, str(HERE / "upstream_assets.py"), str(assets / "weights"), str(assets / "datasets")],
                   env=stock_env(assets / "cfg"), check=True)
    (assets / "stamp").write_text(stamp)
    log(f"assets made in {time.time() - t:.0f}s")
    return assets


def prepare_run(base: Path, assets: Path) -> tuple[Path, Path]:
    """A fresh ``base/run``: copies of the assets, a runs dir, and a settings file pointing at them. Returns
    (run dir, YOLO_CONFIG_DIR)."""
    run = base / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    for d in ("weights", "datasets"):
        shutil.copytree(assets / d, run / d)
    cfg = run / "cfg"
    settings = {"datasets_dir": str(run / "datasets"), "weights_dir": str(run / "weights"),
                "runs_dir": str(run / "runs")}
    # plots look for Arial in the settings dir before downloading it: matplotlib's DejaVu Sans stands in
    code = f"""if True:
        import shutil
        from pathlib import Path
        import matplotlib
        from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
        SETTINGS.update({settings!r})
        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            shutil.copy2(font, USER_CONFIG_DIR / name)
    """
    subprocess.run([PY, "-c", code], env=stock_env(cfg), check=True, stdout=subprocess.DEVNULL)
    return run, cfg


def run_env(mode: str, cfg: Path, state: Path) -> dict:
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cfg), "UPSTREAM_SUITE_PLUGIN": mode,
           "UPSTREAM_SUITE_STATE": str(state),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(HERE), os.environ.get("PYTHONPATH")))),
           "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # test_cli runs `yolo`
    env.pop("ULTRA_PRUNE_DISABLE", None)
    if mode == "off":
        env["ULTRA_PRUNE_DISABLE"] = "1"  # reaches the `yolo` subprocesses too
    return env


def check_plugin(mode: str, env: dict) -> bool:
    """A child like test_cli's `yolo` ones: does importing ultralytics run the ultra-prune patches?"""
    yolo = shutil.which("yolo", path=env["PATH"])
    if yolo is None or Path(yolo).parent != Path(PY).parent:
        log(f"[{mode}] `yolo` on PATH is {yolo}, not the one beside {PY}")
        return False
    code = "import ultralytics; print(bool(getattr(ultralytics, '_ultra_prune_patched', False)))"
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True)
    patched = out.stdout.strip() == "True"
    ok = out.returncode == 0 and patched == (mode == "on")
    log(f"[{mode}] child interpreter: ultralytics._ultra_prune_patched={patched} "
        f"({'as expected' if ok else 'NOT AS EXPECTED'}){out.stderr.strip() and ' stderr: ' + out.stderr.strip()}")
    return ok


def pytest_runs_dir() -> Path:
    """Where ultralytics saves runs while pytest runs, whatever the settings say (cfg.get_save_dir: ROOT.parent /
    "tests/tmp/runs", i.e. site-packages/tests/tmp/runs for an installed ultralytics)."""
    return Path(importlib.util.find_spec("ultralytics").origin).parents[1] / "tests" / "tmp" / "runs"


def runs_in(runs: Path) -> set[Path]:
    return {d for task in runs.iterdir() if task.is_dir() for d in task.iterdir()} if runs.is_dir() else set()


def remove_new_runs(runs: Path, before: set[Path], created: list[Path]) -> int:
    """Remove the run folders that appeared since ``before``, and the folders of ``created`` left empty."""
    new = runs_in(runs) - before
    for d in new:
        shutil.rmtree(d, ignore_errors=True)
    for d in [*(t for t in runs.iterdir() if t.is_dir()), *created] if runs.is_dir() else created:
        with contextlib.suppress(OSError):
            d.rmdir()  # only if empty
    return len(new)


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pytest_run(mode: str, base: Path, assets: Path, timeout: int, extra: list[str]) -> tuple[int, float, float]:
    results = base / "results"
    results.mkdir(exist_ok=True)
    xml, out, state = results / f"{mode}.xml", results / f"{mode}.log", results / f"{mode}.state.json"
    for f in (xml, out, state):
        f.unlink(missing_ok=True)
    run, cfg = prepare_run(base, assets)
    env = run_env(mode, cfg, state)
    if not check_plugin(mode, env):
        return 4, 0.0, 0.0
    # extra arguments naming tests (tests/...) replace FILES; the others are passed on as they are
    paths = [str(base / a) for a in extra if a.startswith("tests/")] or [str(base / f) for f in FILES]
    options = [a for a in extra if not a.startswith("tests/")]
    ini = base / "pytest.ini"
    ini.write_text("[pytest]\nmarkers =\n    slow: skip slow tests unless --slow is set\n"
                   "filterwarnings =\n    ignore::torch.jit.TracerWarning\n")
    cmd = [PY, "-m", "pytest", "-c", str(ini), "--rootdir", str(base), "-p", "upstream_plugin",
           "-p", "no:cacheprovider", "-q", "-rfE", "--tb=short", "--durations=15", f"--timeout={timeout}",
           f"--junitxml={xml}", "-o", "junit_family=xunit2", "-o", "junit_logging=all", f"--basetemp={run / 'tmp'}",
           *paths, *options]
    log(f"[{mode}] pytest {' '.join(a.replace(str(base) + '/', '') for a in paths + options)} (log: {out})")
    runs = pytest_runs_dir()
    created = [d for d in (runs, runs.parent, runs.parent.parent) if not d.exists()]  # deepest first
    before = runs_in(runs)
    t, cpu = time.time(), cpu_children()
    try:
        with open(out, "w") as f:
            rc = subprocess.run(cmd, cwd=run, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    finally:
        took, cpu = time.time() - t, cpu_children() - cpu
        removed = remove_new_runs(runs, before, created)
    log(f"[{mode}] removed the {removed} run folders the tests left in {runs}")
    tail = out.read_text(errors="replace").splitlines()
    summary = next((i for i, line in enumerate(tail) if "short test summary info" in line), max(len(tail) - 3, 0))
    log("\n".join(f"    {line}" for line in tail[summary:]))
    if state.is_file():
        s = json.loads(state.read_text())
        log(f"[{mode}] in pytest: ultralytics {s['ultralytics']}, _ultra_prune_patched={s['patched']}")
    log(f"[{mode}] pytest exit {rc} in {took:.0f}s ({cpu:.0f} CPU-seconds)")
    return rc, took, cpu


EXC = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b|ERROR\b)")


def outcomes(xml: Path) -> dict[str, tuple[str, str]]:
    """``{test id: (outcome, first line of the message)}`` from a junit file; outcome is passed/failed/error/skipped."""
    got = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        cls = case.get("classname", "")
        path = cls.replace(".", "/") + ".py" if cls else case.get("file", "")
        nodeid = f"{path}::{case.get('name')}"
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                msg = (el.get("message") or (el.text or "")).strip().splitlines()
                msg = msg[0] if msg else ""
                if "CalledProcessError" in msg:  # a `yolo` subprocess failed: its last error line says why
                    text = "\n".join(x.text or "" for out in ("system-out", "system-err") for x in case.iter(out))
                    said = [line.strip() for line in text.splitlines() if EXC.match(line.strip())]
                    msg = f"{msg.split(' returned ')[0][:90]}...] <- {said[-1]}" if said else msg
                break
        if nodeid in got and got[nodeid][0] != "passed":  # a call failure and a teardown error: keep the first
            continue
        got[nodeid] = (outcome, msg)
    return got


def count(res: dict) -> dict:
    c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for outcome, _ in res.values():
        c[outcome] += 1
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=int, default=120, help="per-test timeout in seconds (pytest-timeout)")
    ap.add_argument("--only", choices=("off", "on"), help="one run only, no comparison (for debugging)")
    ap.add_argument("extra", nargs="*", help="extra pytest arguments, after --")
    args = ap.parse_args()

    version = importlib.metadata.version("ultralytics")
    base = ROOT / ".ul" / "upstream" / version
    base.mkdir(parents=True, exist_ok=True)
    log(f"ultralytics {version} (installed); upstream tests in {base}")
    fetch_tests(base, version)
    ensure_pytest_timeout()
    assets = make_assets(base, version)

    from upstream_plugin import DESELECT

    log("deselected in both runs:")
    for pattern, why in DESELECT.items():
        log(f"    {pattern}  ({why})")

    modes = [args.only] if args.only else ["off", "on"]
    rcs, took, cpu = {}, {}, {}
    for mode in modes:
        rcs[mode], took[mode], cpu[mode] = pytest_run(mode, base, assets, args.timeout, args.extra)
    if args.only:
        return rcs[args.only] not in (0, 1)

    res = {m: outcomes(base / "results" / f"{m}.xml") if (base / "results" / f"{m}.xml").is_file() else {}
           for m in modes}
    log(f"\n{'run':<26}{'passed':>8}{'failed':>8}{'errors':>8}{'skipped':>9}{'total':>7}{'time':>8}{'CPU':>7}")
    for m, title in (("off", "plugin off (DISABLE=1)"), ("on", "plugin on")):
        c = count(res[m])
        log(f"{title:<26}{c['passed']:>8}{c['failed']:>8}{c['error']:>8}{c['skipped']:>9}{len(res[m]):>7}"
            f"{took[m]:>7.0f}s{cpu[m]:>6.0f}s")

    def passed(m, t):
        return res[m].get(t, ("missing",))[0] == "passed"

    regressed = [t for t in res["off"] if passed("off", t) and not passed("on", t)]
    fixed = [t for t in res["on"] if passed("on", t) and not passed("off", t)]
    both = [t for t, (o, _) in res["off"].items() if o in ("failed", "error") and res["on"].get(t, ("",))[0] in
            ("failed", "error")]
    if both:
        log(f"\nnot passing in either run (not counted; the stand-in assets or this machine): {len(both)}")
        for t in both:
            log(f"    {t}: {res['off'][t][1][:160]}")
    if fixed:
        log(f"\npassing only with the plugin on: {len(fixed)}")
        for t in fixed:
            log(f"    {t}")
    log(f"\nREGRESSIONS (pass with the plugin off, not with it on): {len(regressed)}")
    for t in regressed:
        outcome, msg = res["on"].get(t, ("missing", "not run"))
        log(f"    {t}: {outcome}: {msg[:300]}")

    broken = [m for m in modes if rcs[m] not in (0, 1)]  # 2: interrupted, 3: internal error, 4: usage/plugin state
    for m in broken:
        log(f"run '{m}' did not complete normally (pytest exit {rcs[m]})")
    if not any(o == "passed" for o, _ in res["off"].values()):
        log("nothing passed with the plugin off: the harness is broken")
        broken.append("off")
    return 1 if regressed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
