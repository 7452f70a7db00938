"""The INT8 splits keep the right backbone convolutions in float: the feature taps the flows read."""

from __future__ import annotations


def test_last_taps_keep_only_each_tap_producer_of_the_full_residual_chain(trained_run):
    from calibration.export import float_op_names, to_openvino
    from calibration.quantize import SPLITS, feature_tap_convs, ignored_names
    from training.checkpoint import load_model

    loaded = load_model(trained_run / "checkpoint.pt")
    model = (loaded[0] if isinstance(loaded, tuple) else loaded).eval()
    graph = to_openvino(model)
    floats = float_op_names(graph, model.float_scopes)
    chain = set(feature_tap_convs(graph, floats, through_add=True))
    last = set(feature_tap_convs(graph, floats, through_add=False))
    assert last and last < chain  # EfficientNet-Lite's tapped stages end in residual blocks
    ops = {op.get_friendly_name(): op for op in graph.get_ordered_ops()}
    for name in last:  # each kept conv feeds the float region without meeting a residual sum
        assert ops[name].get_type_name() == "Convolution"
    assert SPLITS.index("backbone+subnets, last taps in float") < SPLITS.index("backbone+subnets, taps in float")
    ignored_last, _ = ignored_names(graph, model.float_scopes, "backbone+subnets, last taps in float")
    ignored_chain, _ = ignored_names(graph, model.float_scopes, "backbone+subnets, taps in float")
    assert last <= set(ignored_last) and not (chain - last) & set(ignored_last)
    assert chain <= set(ignored_chain)


def test_int8_calibration_images_are_spread_over_the_whole_training_set_not_its_first_names():
    from calibration.quantize import spread

    names = [f"exp{s}_{i:03d}" for s in range(1, 7) for i in range(100)]  # six sessions, in name order
    picked = spread(names, 300)
    assert len(picked) == 300 and picked[0] == names[0] and picked[-1] == names[-1]
    assert {p[:4] for p in picked} == {f"exp{s}" for s in range(1, 7)}  # every session, not the first three
    assert all(40 <= sum(p.startswith(f"exp{s}") for p in picked) <= 60 for s in range(1, 7))
    assert spread(names[:7], 300) == names[:7]
