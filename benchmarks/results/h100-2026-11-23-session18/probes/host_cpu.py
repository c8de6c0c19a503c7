"""Host cost of the public forward on CPU with the launch stubbed (development probe)."""
import timeit, torch
from flashmarkov.attention import op, forward, gluon_forward
import flashmarkov.attention as A
forward._FWD = lambda *a: None
op._use_triton = lambda x: True
q = torch.randn(32, 8, 128, 64, dtype=torch.bfloat16)
k = torch.randn(32, 8, 128, 64, dtype=torch.bfloat16)
v = torch.randn(32, 8, 128, 64, dtype=torch.bfloat16)
def t(f, n=20000):
    f()
    return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6
print("flash_attention      %.2f us" % t(lambda: A.flash_attention(q, k, v)))
print("op.attention_fwd     %.2f us" % t(lambda: op.attention_fwd(q, k, v, None, None, 128, 128, False, 0.125, -1, -1, 0.0)))
prob = forward.make_problem(q, k, None, None, 128, 128, 0.125, False, -1, -1, 0.0)
o, lse = torch.empty_like(q), torch.empty(32, 8, 128)
print("make_problem         %.2f us" % t(lambda: forward.make_problem(q, k, None, None, 128, 128, 0.125, False, -1, -1, 0.0)))
print("attention_forward    %.2f us" % t(lambda: forward.attention_forward(q, k, v, o, lse, prob)))
print("gluon supported      %.2f us" % t(lambda: gluon_forward.supported(q, k, v, o, prob)))
print("large_offsets        %.2f us" % t(lambda: forward.large_offsets(q, k, v)))
print("empty_like           %.2f us" % t(lambda: torch.empty_like(q)))
print("lse new_empty        %.2f us" % t(lambda: op._lse_like(q, None)))
print("torch.empty(shape)   %.2f us" % t(lambda: torch.empty((32, 8, 128), dtype=torch.float32)))
print("strides4             %.2f us" % t(lambda: forward.strides4(q, False)))
print("data_ptr x7          %.2f us" % t(lambda: [x.data_ptr() for x in (q, k, v, o, lse, q, k)]))
