"""Host calibration: export to OpenVINO IR, INT8 quantization, thresholds, evaluation."""
