"""What edge-calibrate says when the IR it ships lost accuracy against float, or gained no speed."""

from calibration.calibrate import accuracy_loss_warning, drop_limit, speed_warning


def test_pixel_limit_is_twice_the_image_limit():
    assert drop_limit("image", 0.005) == 0.005 and drop_limit("pixel", 0.005) == 0.01


def test_a_pixel_loss_over_its_limit_is_named_in_one_line():
    # the figures edge-calibrate measured on magnetic_tile with the surface preset: every INT8 split kept image
    # AUROC but lost about 1.5 points of pixel AUROC, and the accuracy-controlled fallback shipped that loss
    line = accuracy_loss_warning({"image_auroc": 0.9497, "pixel_auroc": 0.8027},
                                 {"image_auroc": 0.9477, "pixel_auroc": 0.7880}, 0.005, "int8")
    assert line is not None and "\n" not in line
    assert "pixel AUROC 0.0147" in line and "image AUROC" not in line and "--precision" in line


def test_losses_within_the_limits_or_unmeasured_say_nothing():
    ref = {"image_auroc": 0.95, "pixel_auroc": 0.80}
    assert accuracy_loss_warning(ref, {"image_auroc": 0.947, "pixel_auroc": 0.792}, 0.005, "int8") is None
    assert accuracy_loss_warning({"image_auroc": 0.95, "pixel_auroc": None}, {"image_auroc": 0.95, "pixel_auroc": None},
                                 0.005, "int8") is None


def test_both_losses_are_named():
    line = accuracy_loss_warning({"image_auroc": 0.95, "pixel_auroc": 0.80}, {"image_auroc": 0.90, "pixel_auroc": 0.70},
                                 0.005, "int8")
    assert "image AUROC 0.0500" in line and "pixel AUROC 0.1000" in line



def test_accuracy_control_metric_is_one_for_float_and_zero_at_either_limit():
    # nncf divides by the float model's metric (its relative drop is computed whatever drop type is asked for):
    # a metric of 0 for float raised ZeroDivisionError in a real magnetic_tile calibration
    from calibration.calibrate import limits_metric

    ref = {"image_auroc": 0.95, "pixel_auroc": 0.80}
    got = {}
    metric = limits_metric(ref, 0.005, measure=lambda compiled: got)
    got.update(ref)
    assert metric(None) == 1.0
    got.update(image_auroc=0.95, pixel_auroc=0.79)  # pixel AUROC used up its 1-point limit
    assert abs(metric(None)) < 1e-9
    got.update(image_auroc=0.94, pixel_auroc=0.80)  # 1 point of image AUROC is twice its 0.5-point limit
    assert abs(metric(None) + 1.0) < 1e-9
    got.update(image_auroc=0.96, pixel_auroc=0.797)  # the worse of the two terms decides
    assert abs(metric(None) - 0.7) < 1e-9


def test_accuracy_control_metric_uses_image_auroc_alone_without_masks():
    from calibration.calibrate import limits_metric

    metric = limits_metric({"image_auroc": 0.9, "pixel_auroc": float("nan")}, 0.005,
                           measure=lambda compiled: {"image_auroc": 0.8975, "pixel_auroc": float("nan")})
    assert abs(metric(None) - 0.5) < 1e-9


def test_an_int8_ir_no_faster_than_float_is_named_with_the_cpu_reason():
    line = speed_warning(40.5, 39.9, int8_dot_product=False)
    assert line and "\n" not in line and "39.9" in line and "40.5" in line and "VNNI" in line and "fp32" in line
    assert "VNNI" not in speed_warning(20.0, 19.0, int8_dot_product=True)
    assert speed_warning(30.3, 21.1, int8_dot_product=False) is None  # a real gain (U-Flow on AVX2): silent
