# Float64 simulation (CPU) of the diffmax attention forward's tau iterations on Gaussian q, k (1x4x4096x64, 128-row tiles,
# alpha = 0.5): "cur" = the kernel's Newton passes with the predicted-last step; "new" = the variant chosen:
#   exact-support: the k = 2 quadratic-model step each pass, done when the smallest positive y (moving up) or the
#                  gap to the largest excluded score (moving down) certifies that the support did not change;
#   newton-certificate: Newton steps, done when the model step is certified (smallest positive y).
# Run: python diffmax_tau_sim.py {exact-support|newton-certificate} [seed]. Session 13, notes/diffmax.md.
import numpy as np, sys
variant = sys.argv[1] if len(sys.argv) > 1 else "exact-support"
assert variant in ("exact-support", "newton-certificate"), variant
rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
S, D, BM, BN, GROUPS = 4096, 64, 128, 64, 16
alpha = 0.5; k = 1/(1-alpha); scale = D**-0.5; c = (1-alpha)*scale; tol = 2e-6
def newton_step(s, t):
    return np.where(t > 0, (s - s**(1-1/k)) / np.where(t > 0, t, 1), 0.0)
def sums(x, tau):
    y = np.maximum(x - tau[:, None], 0)
    return (y**k).sum(1), (y**(k-1)).sum(1), (y > 0).sum(1), np.where(y > 0, y, np.inf).min(1), np.where(x <= tau[:,None], tau[:,None]-x, np.inf).min(1)
res = {"cur": [], "new": [], "new_ok2": 0, "new_ok1": 0}
for head in range(4):
    q = rng.standard_normal((S, D)).astype(np.float32).astype(np.float64)
    kk = rng.standard_normal((S, D))
    X = c * (q @ kk.T)
    for m in range(S // BM):
        x = X[m*BM:(m+1)*BM]
        mx = x.max(1); tau_lo = mx - 1; tau_hi = mx - S**(-1/k)
        m8 = np.stack([x[:, j::8].max(1) for j in range(8)], 1)
        gm = x.reshape(BM, GROUPS, -1).max(2)
        def sub_root(sub):
            t = tau_lo.copy()
            for _ in range(4):
                y = np.maximum(sub - t[:, None], 0)
                t = t + newton_step((y**k).sum(1), (y**(k-1)).sum(1))
            return t
        tau0 = np.clip(np.maximum(sub_root(m8), sub_root(gm)), tau_lo, tau_hi)
        # exact tau* by many newton steps
        ts = tau0.copy()
        for _ in range(60):
            a, b, _, _, _ = sums(x, ts); ts = ts + newton_step(a, b)
        # current scheme
        tau = tau0.copy(); a, b, _, _, _ = sums(x, tau); npass = 1
        step = newton_step(a, b); prev = np.full(BM, np.inf)
        live = step > tol*(1+abs(tau)); it = 0
        while it < 8 and live.any():
            btol = tol*(1+abs(tau)); last = (prev < np.inf) & (step**3 <= btol*prev**2)
            tau = np.where(live, np.minimum(np.maximum(tau+step, tau_lo), tau_hi), tau)
            live = live & ~last
            if live.any():
                a, b, _, _, _ = sums(x, tau); npass += 1
                prev = np.where(live, step, prev); step = newton_step(a, b)
                live = live & (step > tol*(1+abs(tau))) & (step < prev)
            it += 1
        res["cur"].append((npass, np.abs(tau - ts).max()))
        # new: the k = 2 quadratic model on a fixed support, certified as the variant says
        tau = tau0.copy(); npass = 0
        while True:
            a, b, cnt, ymin, gap = sums(x, tau); npass += 1
            disc = np.maximum(b*b - cnt*(a - 1), 0)
            d = np.where(b > 0, (a - 1) / np.where(b > 0, b + np.sqrt(disc), 1), 0)
            if variant == "exact-support":
                ok = np.where(d >= 0, d <= ymin, -d < gap)
                tau = tau + d
                if ok.all() or npass >= 8:
                    break
            else:
                if (d <= ymin).all() or npass >= 8:
                    tau = tau + d
                    break
                tau = np.minimum(tau + newton_step(a, b), tau_hi)
        res["new"].append((npass, np.abs(tau - ts).max()))
cur = np.array(res["cur"]); new = np.array(res["new"])
print("cur passes mean %.3f max %d  err %.2e" % (cur[:,0].mean(), cur[:,0].max(), cur[:,1].max()))
print("new passes mean %.3f max %d  err %.2e" % (new[:,0].mean(), new[:,0].max(), new[:,1].max()))
print("new pass histogram", np.bincount(new[:,0].astype(int)))
