"""The before/after report of a pruning: per-layer widths, params, GFLOPs, file size and (optionally) mAP."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from ultra_prune.pruning.record import Pruning


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def inner_channels(layer) -> int | None:
    """The output channels of every BatchNorm2d (Conv+BN block) inside ``layer``, summed; None if it has none."""
    from torch import nn

    widths = [m.num_features for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    return sum(widths) if widths else None


def gflops(model, imgsz: int = 640) -> float:
    """GFLOPs at ``imgsz`` by ultralytics' own counter (0.0 where thop is missing)."""
    from ultralytics.utils.torch_utils import get_flops

    return float(get_flops(model, imgsz))


@dataclass
class PruneReport:
    """What a pruning changed. Pairs are (before, after)."""

    prune: float
    prune_round: int
    prune_min: int
    prune_by: str = "channels"
    prune_importance: str = "l1"
    layers: list = field(default_factory=list)  # [index, type, channels before, channels after]
    params: tuple = (0, 0)
    gflops: tuple = (0.0, 0.0)
    imgsz: int = 640
    prunable_channels: int = 0
    removed_channels: int = 0
    removed_blocks: list = field(default_factory=list)  # residual blocks removed whole (prune_depth), by module name
    left_intact: list = field(default_factory=list)
    file_mb: tuple | None = None
    accuracy: tuple | None = None  # (before, after) of ``metric`` on the data= given
    metric: str = "mAP50-95"  # classify: top-1 accuracy
    onnx_mb: tuple | None = None
    onnx_parity: float | None = None  # max |onnxruntime - torch| / max |torch| of the pruned model
    latency_runtime: str | None = None  # prune_by=latency: where latency was measured
    latency_predicted: tuple | None = None  # ms (before, after) by the latency table
    latency_measured: tuple | None = None  # ms (before, after) of the exported models, timed interleaved
    output: str | None = None
    inner: list = field(default_factory=list)  # layers with no single output tensor (Detect): inner channels

    @classmethod
    def build(cls, before, after, info: Pruning, prune: float, prune_round: int, prune_min: int, imgsz: int = 640,
              prune_by: str = "channels", prune_importance: str = "l1"):
        layers = [[i, t, b, a] for i, (t, b, a) in enumerate(zip(info.layer_types, info.widths_before, info.widths_after))]
        inner = [row[0] for row in layers if not row[2]]  # no single 4-D output (Detect's list): 0 before
        for i in inner:
            layers[i][2:] = inner_channels(before.model[i]), inner_channels(after.model[i])
        return cls(
            prune, prune_round, prune_min, prune_by, prune_importance, layers,
            (count_params(before), count_params(after)), (gflops(before, imgsz), gflops(after, imgsz)), imgsz,
            info.prunable_channels, info.removed_channels, info.removed_blocks, info.left_intact,
            inner=inner,
        )

    def text(self) -> str:
        """The report as a table, in the look of ultralytics' model summaries."""
        def pair(name, p, fmt):
            ratio = f"{p[1] / p[0]:.3f}x" if p[0] else "-"
            return f"{name:<22}{fmt.format(p[0]):>14}{fmt.format(p[1]):>14}{ratio:>10}"

        lines = [f"{'layer':>5} {'module':<12}{'channels before':>16}{'after':>8}"]
        lines += [f"{i:>5} {t:<12}{'-' if b is None else b:>16}{'-' if a is None else a:>8}{'' if a == b else '  *'}"
                  f"{'  (inner)' if i in self.inner else ''}" for i, t, b, a in self.layers]
        if self.inner:
            lines.append("(inner): the layer's output is not one tensor; its row counts the channels of its inner "
                         "Conv+BN blocks ('-': none)")
        lines += ["", f"{'':<22}{'before':>14}{'after':>14}{'ratio':>10}", pair("parameters", self.params, "{:,}")]
        lines.append(pair(f"GFLOPs @{self.imgsz}", self.gflops, "{:.2f}"))
        if self.file_mb:
            lines.append(pair("file MB", self.file_mb, "{:.2f}"))
        if self.accuracy:
            lines.append(pair(self.metric, self.accuracy, "{:.4f}"))
        if self.onnx_mb:
            lines.append(pair("ONNX MB", self.onnx_mb, "{:.2f}"))
            lines.append(f"onnxruntime vs torch (pruned): max relative difference {self.onnx_parity:.2e}")
        if self.latency_predicted and not self.latency_measured:
            lines.append(pair("latency ms predicted", self.latency_predicted, "{:.2f}"))
            lines.append(f"latency @{self.imgsz} ({self.latency_runtime}): predicted only, the device was not reachable")
        if self.latency_measured:
            where = f"@{self.imgsz} ({self.latency_runtime})"
            lines.append(pair("latency ms predicted", self.latency_predicted, "{:.2f}"))
            lines.append(pair("latency ms measured", self.latency_measured, "{:.2f}"))
            (pb, pa), (mb, ma) = self.latency_predicted, self.latency_measured
            lines.append(f"latency {where}: prediction error {pb / mb - 1:+.1%} before, {pa / ma - 1:+.1%} after; "
                         f"measured after = {ma / mb / max(1 - self.prune, 1e-9):.3f}x the budget "
                         f"({1 - self.prune:.0%} of before)")
        how = (f"the ones the sparsity_target={self.prune:g} run drove to zero (prune_by={self.prune_by}, "
               if self.prune_importance == "zeroed" else
               f"prune={self.prune}, prune_by={self.prune_by}, prune_importance={self.prune_importance}, ")
        lines.append(f"channels removed: {self.removed_channels}/{self.prunable_channels} prunable "
                     f"({how}prune_round={self.prune_round}, prune_min={self.prune_min})")
        if self.removed_blocks:
            lines.append(f"residual blocks removed whole: {len(self.removed_blocks)} (every layer at its floor still "
                         f"missed the budget; prune_depth=False keeps them): " + ", ".join(self.removed_blocks))
        if self.left_intact:
            lines.append("left intact: " + ", ".join(self.left_intact))
        return "\n".join(lines)

    def save(self, path) -> None:
        """Write the table (``.txt``) or all fields (``.json``) to ``path``, atomically."""
        from pathlib import Path

        from ultra_prune.io.checkpoint import atomic_write

        p = Path(path)
        text = json.dumps(asdict(self), indent=2) if p.suffix == ".json" else self.text() + "\n"
        atomic_write(p, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
