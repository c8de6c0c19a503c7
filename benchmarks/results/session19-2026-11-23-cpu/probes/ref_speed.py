import time, torch
from flashmarkov.diffmax.reference import diffmax_bisect_ref
x = torch.randn(64, 4096)
for _ in range(2): diffmax_bisect_ref(x, 0.5)
t = time.perf_counter()
for _ in range(5): diffmax_bisect_ref(x, 0.5)
print("ms", (time.perf_counter() - t) / 5 * 1e3)
