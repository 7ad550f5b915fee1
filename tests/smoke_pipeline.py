"""End-to-end smoke of the whole slimming pipeline on whatever ultralytics is importable.

sparse training -> ``yolo prune`` (stock CLI) -> one-shot prune + fine-tune (``YOLO(last).train(prune=...)``) ->
plain ``YOLO(best)`` val and predict, in this process and in a fresh one with the plugin switched off
(``ULTRA_PRUNE_DISABLE=1``).

The logic lives here once. CI runs it as a script against old releases shadowed in through ``PYTHONPATH``::

    PYTHONPATH=.ul/8.0.239 .venv/bin/python tests/smoke_pipeline.py

and ``tests/test_smoke_pipeline.py`` runs the same steps under pytest, reusing the session's sparse checkpoint.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMGSZ = 64


def _env() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no online checks
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "ultra_prune_smoke_cfg"))


def train_kwargs(project, name, **kw) -> dict:
    """Small, quiet CPU training arguments (the same as tests/conftest.py's)."""
    args = dict(epochs=1, imgsz=IMGSZ, batch=8, workers=0, device="cpu", plots=False, project=str(project),
                name=name, exist_ok=True, verbose=False, amp=False)
    return {**args, **kw}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def ckpt_params(path) -> int:
    """Parameter count of the model stored in the checkpoint at ``path``."""
    from ultra_prune.io.checkpoint import load_model

    model, _ = load_model(path)
    return n_params(model)


def mean_gamma(path) -> float:
    from ultra_prune.io.checkpoint import load_model
    from ultra_prune.slimming.sparsity import gamma_stats

    model, _ = load_model(path)
    return gamma_stats(model)["sparsity/gamma_mean"]


def make_data(root) -> Path:
    from ultra_prune.commands.dataset import make_dataset

    return make_dataset(Path(root) / "shapes", 24, 8, IMGSZ)


# An optimizer step every batch (nbs=batch) with plain SGD at full lr: by default 3 batches make at most 3 warm-up
# steps that start BN weights at lr 0 (or, without warm-up, no step at all: nbs/batch=8 batches are accumulated),
# which moves gamma by less than the fp16 resolution of a checkpoint, so sparse and plain runs look the same.
SPARSE_OPTIM = dict(optimizer="SGD", lr0=0.01, warmup_epochs=0, nbs=8)


def train_sparse(data, project, sparsity: float = 1.0) -> Path:
    """1 epoch of yolov8n.yaml with BN-L1 (``sparsity=``); returns last.pt."""
    from ultralytics import YOLO

    kw = train_kwargs(project, "sparse", sparsity=sparsity, **SPARSE_OPTIM)
    kw["plots"] = True  # the stock plots plus ultra-prune's |γ| histogram
    YOLO("yolov8n.yaml").train(data=str(data), **kw)
    run = Path(project) / "sparse"
    last = run / "weights" / "last.pt"
    assert last.is_file(), f"sparse training wrote no {last}"
    assert (run / "gamma_hist.png").is_file(), f"sparse training drew no {run / 'gamma_hist.png'}"
    header = [k.strip() for k in (run / "results.csv").read_text().splitlines()[0].split(",")]
    assert "sparsity/gamma_mean" in header, f"results.csv lacks the |γ| columns: {header}"
    return last


def check_sparse(last, data, project) -> dict:
    """Optional: |gamma| of the sparse run is below that of a plain run (one more epoch of training)."""
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").train(data=str(data), **train_kwargs(project, "plain", **SPARSE_OPTIM))
    plain, sparse = mean_gamma(Path(project) / "plain" / "weights" / "last.pt"), mean_gamma(last)
    assert sparse < plain, f"sparse training did not shrink gamma: mean |γ| {sparse:.4f} (sparse) vs {plain:.4f} (plain)"
    return {"gamma_plain": plain, "gamma_sparse": sparse}


def prune_cli(last, workdir, ratio: float = 0.5) -> dict:
    """The stock ``yolo`` command (patched by the start-up hook) in ``prune`` mode writes a smaller checkpoint."""
    out = Path(workdir) / "cli_pruned.pt"
    yolo = Path(sys.executable).parent / "yolo"
    r = subprocess.run([str(yolo), "prune", f"model={last}", f"prune={ratio}", f"prune_out={out}"], cwd=workdir,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and out.is_file(), f"yolo prune failed:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    n, sparse = ckpt_params(out), ckpt_params(last)
    assert n < sparse, f"yolo prune did not shrink the model: {n} vs {sparse}"
    return {"params_yolo_prune": n}


def prune_finetune(last, data, project, ratio: float = 0.5) -> dict:
    """``YOLO(last).train(prune=ratio)``: best.pt must be smaller than the sparse model and as big as pruned.pt."""
    from ultralytics import YOLO

    YOLO(str(last)).train(data=str(data), **train_kwargs(project, "pruned", prune=ratio))
    wdir = Path(project) / "pruned" / "weights"
    best, pruned = wdir / "best.pt", wdir / "pruned.pt"
    assert best.is_file(), f"fine-tuning wrote no {best}"
    assert pruned.is_file(), f"prune= wrote no {pruned}"
    counts = {"sparse": ckpt_params(last), "pruned": ckpt_params(pruned), "best": ckpt_params(best)}
    assert counts["best"] < counts["sparse"], f"best.pt is not smaller than the sparse model: {counts}"
    assert counts["best"] == counts["pruned"], f"fine-tuning changed the pruned architecture: {counts}"
    return {"params": counts, "best": best}


def target_prune_distill(data, project, workdir) -> dict:
    """``sparsity_target=0.5 prune_by=flops`` (2 epochs), ``yolo prune`` with no ``prune=`` (the recorded target), then
    1 epoch of fine-tuning with ``distill_model=`` the sparse checkpoint: the pruned size survives throughout."""
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").train(data=str(data), **train_kwargs(project, "target", epochs=2, sparsity_target=0.5,
                                                              prune_by="flops"))
    sparse = Path(project) / "target" / "weights" / "last.pt"
    rows = (Path(project) / "target" / "results.csv").read_text().splitlines()
    header = [k.strip() for k in rows[0].split(",")]
    reached = float(rows[-1].split(",")[header.index("sparsity/reached")])
    assert reached >= 0.5, f"sparsity_target=0.5 reached only {reached:.3f}"
    out = Path(workdir) / "target_pruned.pt"
    yolo = Path(sys.executable).parent / "yolo"
    r = subprocess.run([str(yolo), "prune", f"model={sparse}", f"prune_out={out}", f"imgsz={IMGSZ}"], cwd=workdir,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and out.is_file(), f"yolo prune (recorded target) failed:\n{r.stderr[-4000:]}"
    YOLO(str(out)).train(data=str(data), **train_kwargs(project, "distill", distill_model=str(sparse)))
    best = Path(project) / "distill" / "weights" / "best.pt"
    counts = {"sparse": ckpt_params(sparse), "pruned": ckpt_params(out), "distilled": ckpt_params(best)}
    assert counts["pruned"] < counts["sparse"] and counts["distilled"] == counts["pruned"], counts
    return {"target_reached": reached, "target_params": counts}


def use_plain(best, data, project) -> dict:
    """Validate and predict with a plain ``YOLO(best)``; the model must keep its pruned size throughout."""
    from ultralytics import YOLO

    model = YOLO(str(best))
    size = n_params(model.model)
    metrics = model.val(data=str(data), imgsz=IMGSZ, batch=8, workers=0, device="cpu", plots=False,
                        project=str(project), name="val", exist_ok=True, verbose=False)
    images = sorted((Path(data).parent / "images" / "val").glob("*.jpg"))[:2]
    results = YOLO(str(best)).predict([str(p) for p in images], imgsz=IMGSZ, device="cpu", verbose=False)
    assert len(results) == len(images), f"predict returned {len(results)} results for {len(images)} images"
    assert n_params(YOLO(str(best)).model) == size
    from ultralytics.utils.metrics import compute_ap  # an untrained model scores 0 and never reaches it

    ap = compute_ap([0.0, 0.5, 1.0], [1.0, 1.0, 0.5])[0]
    assert 0 < ap <= 1, ap
    return {"map50_95": float(metrics.box.map), "predicted": len(results)}


PLAIN_SCRIPT = """
import sys
from ultralytics import YOLO
import ultralytics
assert not getattr(ultralytics, "_ultra_prune_patched", False), "the plugin was not switched off"
model = YOLO(sys.argv[1])
n = sum(p.numel() for p in model.model.parameters())
r = model.predict(sys.argv[2], imgsz=int(sys.argv[3]), device="cpu", verbose=False)
print("PARAMS", n, "RESULTS", len(r))
"""


def use_without_plugin(best, data) -> dict:
    """Load and predict with ``YOLO(best)`` in a fresh interpreter with ultra-prune switched off.

    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is what any user of ultralytics <= 8.2.63 needs on torch >= 2.6;
    it has nothing to do with ultra-prune.
    """
    image = sorted((Path(data).parent / "images" / "val").glob("*.jpg"))[0]
    env = {**os.environ, "ULTRA_PRUNE_DISABLE": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    out = subprocess.run([sys.executable, "-c", PLAIN_SCRIPT, str(best), str(image), str(IMGSZ)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"plain ultralytics could not use {best}:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    line = next(x for x in out.stdout.splitlines() if x.startswith("PARAMS"))
    return {"params_without_plugin": int(line.split()[1])}


def run(workdir, gamma_check: bool = False, plugin_off_check: bool = True) -> dict:
    """The whole pipeline in ``workdir``; returns what it measured, raises AssertionError on a failure."""
    import ultralytics

    assert getattr(ultralytics, "_ultra_prune_patched", False), "ultra-prune did not patch ultralytics"
    workdir = Path(workdir)
    project = workdir / "runs"
    times, t = {}, time.perf_counter()
    data = make_data(workdir)
    last = train_sparse(data, project)
    times["sparse"] = time.perf_counter() - t
    info = {"ultralytics": ultralytics.__version__, "ultralytics_file": ultralytics.__file__}
    if gamma_check:
        t = time.perf_counter()
        info.update(check_sparse(last, data, project))
        times["plain"] = time.perf_counter() - t
    t = time.perf_counter()
    info.update(prune_cli(last, workdir))
    times["yolo prune"] = time.perf_counter() - t
    t = time.perf_counter()
    info.update(prune_finetune(last, data, project))
    times["prune+finetune"] = time.perf_counter() - t
    t = time.perf_counter()
    info.update(target_prune_distill(data, project, workdir))
    times["target+prune+distill"] = time.perf_counter() - t
    t = time.perf_counter()
    info.update(use_plain(info["best"], data, project))
    times["val+predict"] = time.perf_counter() - t
    if plugin_off_check:
        t = time.perf_counter()
        info.update(use_without_plugin(info["best"], data))
        assert info["params_without_plugin"] == info["params"]["best"], info
        times["without plugin"] = time.perf_counter() - t
    info["seconds"] = {k: round(v, 1) for k, v in times.items()}
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="keep the run here (default: a temporary folder)")
    parser.add_argument("--no-gamma-check", dest="gamma_check", action="store_false",
                        help="skip the plain epoch that checks sparse training shrank |γ|")
    args = parser.parse_args(argv)
    _env()
    import ultralytics

    print(f"ultra-prune smoke: ultralytics {ultralytics.__version__} from {ultralytics.__file__}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ultra_prune_smoke_") as tmp:
        info = run(args.workdir or tmp, gamma_check=args.gamma_check)
    info.pop("best", None)
    print(f"ultra-prune smoke OK: {info}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
