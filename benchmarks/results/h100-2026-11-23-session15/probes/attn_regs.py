"""Registers and spills of the compiled Gluon forward variants (after a probe ran them)."""
from flashmarkov.attention import gluon_forward as g, _old_gluon_forward as o
for name, mod in (("new", g), ("old", o)):
    k = mod._attn_fwd_ws_kernel
    for dev, caches in k.device_caches.items():
        for key, ck in caches[0].items():
            md = ck.metadata
            print(name, {n: getattr(md, n, None) for n in ("num_warps", "shared")}, "regs", ck.n_regs, "spills", ck.n_spills, str(key)[-160:])
