# Writes safetensors-reference.safetensors with the official `safetensors` library (torch backend).
# tests/test-safetensors.cpp (SafetensorsReference.*) checks the C++ reader against these exact
# values; rerun only if the test is changed to match.  python3 make-safetensors-reference.py
import torch
from safetensors.torch import save_file

t = {
    "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0,  # [[-1,-.5,0],[.5,1,1.5]]
    "f16": torch.tensor([1.0, -2.0, 65504.0], dtype=torch.float16),
    "bf16": torch.tensor([[1.0, -0.5], [3.0, 256.0]], dtype=torch.bfloat16),
    "i32": torch.tensor([1, -2, 2147483647, -2147483648], dtype=torch.int32),
    "i64": torch.tensor([-1, 1 << 40], dtype=torch.int64),
    "i8": torch.tensor([-128, 127], dtype=torch.int8),
    "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
    "mask": torch.tensor([True, False, True], dtype=torch.bool),
    "scalar": torch.tensor(3.25, dtype=torch.float32),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
}
save_file(t, "safetensors-reference.safetensors", metadata={"format": "pt", "note": "elastic test"})
