"""``python -m cbn bench --torch-model``: a ResNet-18 training step in
PyTorch with torch's batch norm against the same model after
:func:`cbn.torch.convert`.

For each thread count, in one process, alternating the two models round by
round (the same data, the same initial weights):

- ``step``: one training step -- forward, cross-entropy loss, backward,
  SGD step -- on a batch of 16 images of 3x112x112, float32;
- ``eval``: the forward in eval mode under ``torch.no_grad()``;
- ``bn_share``: the batch-norm operators' share of a step, from the torch
  profiler's self CPU time of ``aten::native_batch_norm`` and
  ``aten::native_batch_norm_backward`` (torch's) or of
  ``cbn::batch_norm_train`` and ``cbn::batch_norm_backward`` (cbn's), over
  the profiled step's total.

The ResNet-18 is torchvision's when it imports, otherwise the same
architecture defined here (BasicBlock, [2, 2, 2, 2], 10 classes).
"""
import copy
import time

import numpy as np

from cbn.bench.timing import median_iqr

BATCH, SIZE, CLASSES = 16, 112, 10
#: Profiler names of the batch-norm operators, per model.
BN_OPS = {"torch": ("aten::native_batch_norm", "aten::native_batch_norm_backward"),
          "cbn": ("cbn::batch_norm_train", "cbn::batch_norm_backward")}


def resnet18(torch):
    """torchvision's ResNet-18 (10 classes), or the same network defined here."""
    try:
        from torchvision.models import resnet18 as tv_resnet18
        return tv_resnet18(num_classes=CLASSES), "torchvision"
    except ImportError:
        pass
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + (x if self.down is None else self.down(x)))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
              nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, CLASSES)]
    return nn.Sequential(*layers), "defined in cbn.bench.model"


def _step(torch, model, opt, x, target):
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    opt.step()


def _bn_share(torch, model, opt, x, target, names):
    """The batch-norm operators' share of one profiled training step."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _step(torch, model, opt, x, target)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    bn = sum(e.self_cpu_time_total for e in events if e.key in names)
    return bn / total if total else float("nan")


def run_model_bench(torch, threads, rounds=7, progress=None):
    """Time both models at each thread count; returns a JSON-ready dict."""
    import cbn.torch as cbn_torch
    torch.manual_seed(0)
    base, source = resnet18(torch)
    models = {"torch": base, "cbn": cbn_torch.convert(copy.deepcopy(base))}
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    target = torch.randint(0, CLASSES, (BATCH,))
    records = []
    for n in threads:
        torch.set_num_threads(n)
        cbn_torch_threads(n)
        if progress is not None:
            progress(f"ResNet-18 training step, {n} thread{'s' if n > 1 else ''}")
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
                for k, m in models.items()}
        times = {f"{k}_{op}": [] for k in models for op in ("step", "eval")}
        for k, m in models.items():  # warm up (and allocate) both
            m.train()
            _step(torch, m, opts[k], x, target)
        for _ in range(rounds):
            for k, m in models.items():
                m.train()
                t = time.perf_counter()
                _step(torch, m, opts[k], x, target)
                times[f"{k}_step"].append(time.perf_counter() - t)
                m.eval()
                with torch.no_grad():
                    t = time.perf_counter()
                    m(x)
                    times[f"{k}_eval"].append(time.perf_counter() - t)
        for m in models.values():
            m.train()
        shares = {k: _bn_share(torch, m, opts[k], x, target, BN_OPS[k])
                  for k, m in models.items()}
        record = {"threads": n, "seconds": {k: median_iqr(v) for k, v in times.items()},
                  "bn_share": shares}
        for op in ("step", "eval"):
            record[f"{op}_speedup"] = median_iqr(np.divide(times[f"torch_{op}"],
                                                           times[f"cbn_{op}"]))
        records.append(record)
    return {"model": f"ResNet-18 ({source}), batch {BATCH}, 3x{SIZE}x{SIZE}, float32",
            "rounds": rounds, "records": records}


def cbn_torch_threads(n):
    """cbn's kernels use n threads, as torch does."""
    import cbn
    cbn.set_num_threads(n)


def format_model_report(result):
    """The text of ``--torch-model``'s table."""
    lines = [result["model"] + f"; median of {result['rounds']} alternated rounds",
             f"{'threads':>7} | {'step, torch':>12} {'step, cbn':>10} {'faster':>7} "
             f"{'IQR %':>6} | {'BN share, torch':>15} {'cbn':>6} {'smaller':>8} | "
             f"{'eval, torch':>11} {'cbn':>9} {'faster':>7}"]
    for r in result["records"]:
        s, sh = r["seconds"], r["bn_share"]
        spread = max(s["torch_step"]["iqr_pct"], s["cbn_step"]["iqr_pct"])
        lines.append(
            f"{r['threads']:>7} | {s['torch_step']['median'] * 1e3:>9.1f} ms "
            f"{s['cbn_step']['median'] * 1e3:>7.1f} ms "
            f"{(r['step_speedup']['median'] - 1) * 100:>+6.1f}% {spread:>6.0f} | "
            f"{sh['torch'] * 100:>14.1f}% {sh['cbn'] * 100:>5.1f}% "
            f"{sh['torch'] / sh['cbn']:>7.1f}x | "
            f"{s['torch_eval']['median'] * 1e3:>8.1f} ms {s['cbn_eval']['median'] * 1e3:>6.1f} ms "
            f"{(r['eval_speedup']['median'] - 1) * 100:>+6.1f}%")
    return lines
