"""The classifier's output dequantization: a 256-entry table, bit for bit the arithmetic."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("dtype, zero_point", [(np.uint8, 0), (np.uint8, 7), (np.int8, -128), (np.int8, 5)])
def test_dequantization_table_is_dequantize_bit_for_bit(dtype, zero_point):
    """The classifier's output path (a 256-entry table) against (q - zero_point) * scale."""
    from edge_runtime.classifier import TensorSpec, dequantize
    spec = TensorSpec(0, (1, 10), dtype, 0.00390625 * 1.7, zero_point)
    codes = np.arange(256, dtype=np.uint8).view(dtype).reshape(16, 16)
    np.testing.assert_array_equal(spec.dequantization_table()[codes.view(np.uint8)],
                                  dequantize(codes, spec.scale, spec.zero_point))
    assert TensorSpec(0, (1, 10), np.float32).dequantization_table() is None
