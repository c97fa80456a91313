"""Slow, literal reference for mexMPnu8 (Kilosort2 v2.0 CUDA/mexMPnu8.cu), for tiny problems.

Each CUDA kernel becomes a Python loop over its blocks; the threads of a block are numpy lanes
(elementwise float32/float64 numpy arithmetic rounds exactly like the scalar code, without FMA).
Launch geometry is emulated with the block size ``block`` (the original's 1024; None = every
sample). Updates are done per spike over the literal window [st - nt0, st + nt0 - 2], redundantly,
as the original does; all n_rounds rounds run. Returns spikes in detection order: round by
round, by time inside a round (the original's order inside a round follows atomicAdd).
"""
import numpy as np

f32, f64 = np.float32, np.float64


def _rz(d):
    """float64 -> float32 rounded toward zero (__double2float_rz)."""
    f = d.astype(f32)
    away = np.abs(f.astype(f64)) > np.abs(d)
    f[away] = np.nextafter(f[away], f32(0))
    return f


class _Kernels:
    def __init__(self, data, U, W, mu, iC, iW, UtU, lam, stable_mode, block, ignore_first_nt0):
        self.U, self.W, self.mu, self.iC, self.iW, self.UtU = U, W, mu, iC, iW, UtU
        self.lam, self.block, self.fix = f32(lam), block, ignore_first_nt0
        self.NT, self.Nchan = data.shape
        self.nt0, self.Nfilt, self.Nrank = W.shape
        self.draw = data.astype(f32).copy()
        self.draw64 = self.draw.astype(f64) if stable_mode else None
        self.dprod = np.zeros((self.NT, self.Nfilt, self.Nrank), f32)
        self.dout = np.zeros((self.NT, self.Nfilt), f32)
        self.err = np.zeros(self.NT, f32)
        self.ftype = np.zeros(self.NT, np.int64)

    def source(self):
        """What spaceFilterUpdate reads: (float) of the double copy in stable mode."""
        return self.draw64.astype(f32) if self.draw64 is not None else self.draw

    def space(self, f, t, src):
        chans = self.iC[:, self.iW[f]]
        for k in range(self.Nrank):
            x = np.zeros(t.size, f32)
            for ch in chans:
                x = x + self.U[ch, f, k] * src[t, ch]
            self.dprod[t, f, k] = x

    def time(self, f, t):
        x = np.zeros(t.size, f32)
        for k in range(self.Nrank):
            for i in range(self.nt0):
                x = x + self.W[i, f, k] * self.dprod[t + i, f, k]
        self.dout[t, f] = x

    def best(self, t):
        a = f32(1) + self.lam
        cbest = np.zeros(t.size, f32)
        ibest = np.zeros(t.size, np.int64)
        for i in range(self.Nfilt):
            b = np.maximum(self.dout[t, i], f32(0)) + self.lam * self.mu[i]
            cf = b * b / a - self.lam * self.mu[i] * self.mu[i]
            win = cf.astype(f64) > cbest.astype(f64) + 1e-6
            cbest[win], ibest[win] = cf[win], i
        self.err[t], self.ftype[t] = cbest, ibest

    def first_pass(self):
        NT, nt0, B = self.NT, self.nt0, self.block
        for f in range(self.Nfilt):
            self.space(f, np.arange(NT), self.draw)
            if B is None:
                self.time(f, np.arange(max(NT - nt0, 0)))
            else:
                for tid0 in range(0, NT - B - nt0 + 1, B):  # while (tid0 < NT-B-nt0+1)
                    self.time(f, tid0 + np.arange(B))
        if B is None or NT // B > 0:  # bestFilter<<<NT/B, B>>> launches no block if NT < B
            t = np.arange(max(NT - nt0, 0))
            self.best(t[t >= nt0] if self.fix else t)

    def cleanup(self, th):
        th2, lockout, NT, B = f32(th) * f32(th), self.nt0 - 1, self.NT, self.block
        if B is None:
            centres = range(lockout, NT - lockout)
        else:
            starts = [bid * B for bid in range(NT // B) if bid * B < NT - B - lockout + 1]
            centres = [tid0 + tid + lockout for tid0 in starts for tid in range(B)]
        found = []
        for t in centres:
            e = self.err[t]
            window = self.err[t - lockout:t + lockout + 1]  # reads past NT: see the module doc
            if e > th2 and not np.any(window > e):
                found.append(t)
        return sorted(found)

    def subtract(self, st, f, y):
        dt = np.arange(self.nt0)
        if self.draw64 is not None:  # subtract_spikes_v4: double
            X = np.zeros((self.nt0, self.Nchan), f64)
            for k in range(self.Nrank):
                X = X + self.W[:, f, k].astype(f64)[:, None] * self.U[:, f, k].astype(f64)[None, :]
            self.draw64[st + dt] = self.draw64[st + dt] + (-f64(y)) * X
        else:  # subtract_spikes: float32
            X = np.zeros((self.nt0, self.Nchan), f32)
            for k in range(self.Nrank):
                X = X + self.W[:, f, k][:, None] * self.U[:, f, k][None, :]
            self.draw[st + dt] = self.draw[st + dt] + (-y) * X

    def update(self, spikes):
        nt0, NT = self.nt0, self.NT
        lanes = np.arange(2 * nt0 - 1)
        src = self.source()
        for bid in range(self.Nfilt):  # spaceFilterUpdate
            for st, f, _ in spikes:
                if self.UtU[f, bid]:
                    t = st - nt0 + lanes
                    self.space(bid, t[(t >= 0) & (t < NT)], src)
        for bid in range(self.Nfilt):  # timeFilterUpdate
            for st, f, _ in spikes:
                if self.UtU[f, bid]:
                    t = st - nt0 + lanes
                    self.time(bid, t[(t >= 0) & (t < NT - nt0)])
        for st, _, _ in spikes:  # bestFilterUpdate
            t = st - nt0 + lanes
            self.best(t[(t >= (nt0 if self.fix else 0)) & (t < NT)])


def mpnu8_naive(data, *, U, W, mu, iC, iW, UtU, iList=None, wPCA=None, th, th_average, lam,
                n_rounds=60, template_features=False, pc_features=False, stable_mode=True,
                block=1024, ignore_first_nt0=False):
    """Returns a dict of the mex outputs (spikes in detection order) plus 'round'."""
    K = _Kernels(np.asarray(data), U, W, mu, iC, iW, UtU, lam, stable_mode, block, ignore_first_nt0)
    K.first_pass()
    st_all, id_all, y_all, vexp_all, feat_all, rounds = [], [], [], [], [], []
    for r in range(n_rounds):
        new = K.cleanup(th)
        spikes = [(t, int(K.ftype[t]), K.dout[t, K.ftype[t]]) for t in new]
        for t, f, y in spikes:
            st_all.append(t), id_all.append(f), y_all.append(y), rounds.append(r)
            vexp_all.append(np.sqrt(K.err[t]))
            if template_features:
                feat_all.append(_template_features(K, iList, t, f))
        for t, f, y in spikes:
            K.subtract(t, f, y)
        K.update(spikes)
    resid = _rz(K.draw64) if stable_mode else K.draw
    st, ids = np.array(st_all, np.int64), np.array(id_all, np.int64)
    y, vexp = np.array(y_all, f32), np.array(vexp_all, f32)
    nnear = iList.shape[0] if template_features else 0
    feat = np.array(feat_all, f32).reshape(-1, nnear).T if template_features else None
    featPC = _pc_features(K, resid, wPCA, st, ids, y) if pc_features else None
    dWU, nsp = _average_snips(K, resid, st, ids, y, vexp, th_average)
    return dict(st=st, template=ids, amplitude=y, vexp=vexp, round=np.array(rounds),
                template_features=feat, pc_features=featPC, dWU=dWU, residual=resid, nsp=nsp)


def _template_features(K, iList, t, f):
    out = []
    for j in range(iList.shape[0]):
        g = iList[j, f]
        r = f32(0)
        for lag in range(-3, 3):
            ci = K.dout[t + lag, g] + K.lam / K.mu[g]
            cf = ci / np.sqrt(K.lam / (K.mu[g] * K.mu[g]) + f32(1))
            r = max(r, cf)
        out.append(r)
    return out


def _pc_features(K, resid, wPCA, st, ids, y):
    nnear, nrank, nt0 = K.iC.shape[0], K.Nrank, K.nt0
    featPC = np.zeros((nnear, nrank, st.size), f32)
    for bid in range(K.Nfilt):
        chans = K.iC[:, K.iW[bid]]
        for p in range(nrank):
            for i, ch in enumerate(chans):
                Y = f32(0)
                for k in range(nrank):
                    X = f32(0)
                    for t in range(nt0):
                        X = X + K.W[t, bid, k] * wPCA[t, p]
                    Y = Y + X * K.U[ch, bid, k]
                for ind in np.flatnonzero(ids == bid):
                    X = Y * y[ind]
                    for t in range(nt0):
                        X = X + resid[st[ind] + t, ch] * wPCA[t, p]
                    featPC[i, p, ind] = X
    return featPC


def _average_snips(K, resid, st, ids, y, vexp, th):
    nt0, nchan = K.nt0, K.Nchan
    dWU = np.zeros((nt0, nchan, K.Nfilt), f64)
    nsp = np.zeros(K.Nfilt, np.int64)
    idx = np.argsort(st, kind="stable")  # time order; equal times keep the order of the rounds
    for bid in range(K.Nfilt):
        X = np.zeros((nt0, nchan), f64)
        for k in range(K.Nrank):
            X = X + (K.W[:, bid, k][:, None] * K.U[:, bid, k][None, :]).astype(f64)
        for ind in idx:
            if vexp[ind] > f32(th) and ids[ind] == bid:
                nsp[bid] += 1
                dWU[:, :, bid] += resid[st[ind]:st[ind] + nt0].astype(f64) + f64(y[ind]) * X
    return dWU, nsp
