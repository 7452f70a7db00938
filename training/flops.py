"""Parameter and multiply-accumulate counts of a model's backbone and flow, measured separately.

Counts come from torch's FlopCounterMode on one image at the model's input size. Papers
(MS-Flow, CS-Flow, FastFlow, CFlow) quote "GFLOPs" as counted by thop/fvcore, which count one
multiply-accumulate as one FLOP: `gmacs` is that figure; `gflops` is 2 x MACs.
"""

from __future__ import annotations

import torch


def count(model) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    h, w = model.config.input_size
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            feats = model.features(x)
        backbone = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            zs, _ = model.flow(feats)
        flow = fc.get_total_flops()
    params = model.param_counts() if hasattr(model, "param_counts") else {
        "backbone": sum(p.numel() for p in model.backbone.parameters()),
        "flow": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("backbone."))}
    return {
        "input_size": [h, w],
        "params_backbone_m": params["backbone"] / 1e6, "params_flow_m": params["flow"] / 1e6,
        "gmacs_backbone": backbone / 2e9, "gmacs_flow": flow / 2e9,
        "gflops_backbone": backbone / 1e9, "gflops_flow": flow / 1e9,
    }
