"""Random rank-3 template sets shaped like mexSVDsmall2's output: the inputs of a template
matching call (mexMPnu8) except the data. Shared by the kernel tests and the original-kernel
comparison (matlab_reference/original_kernels/synthetic.py)."""
import numpy as np

from pykilosort.neighbours import get_closest_channels


def random_templates(rng, *, nchan, nfilt, nt0, nnear, nrank=3, iW=None):
    """Rank-nrank templates like mexSVDsmall2's: W orthonormal per template, U on the nnear
    channels around the main channel iW with unit total norm (so the amplitude of a spike
    a * template is a). Returns the kernel's inputs except data, and ``overlap`` (Nfilt, Nfilt):
    the channels each pair of templates shares."""
    xc, yc = np.tile([0.0, 32.0], nchan)[:nchan], np.arange(nchan) * 20.0
    iC = get_closest_channels(xc=xc, yc=yc, sigma_mask=30.0, n_closest=nnear)[0].astype(np.int32)
    iW = rng.integers(0, nchan, nfilt).astype(np.int32) if iW is None else np.asarray(iW, np.int32)
    t = np.arange(nt0)
    W = np.zeros((nt0, nfilt, nrank), np.float32)
    U = np.zeros((nchan, nfilt, nrank), np.float32)
    for f in range(nfilt):
        centre, width = nt0 * rng.uniform(0.3, 0.45), nt0 * rng.uniform(0.06, 0.12)
        shapes = np.stack([-np.exp(-(t - centre) ** 2 / (2 * width ** 2)) * ((t - centre) / width) ** j
                           for j in range(nrank)], 1) + 0.05 * rng.standard_normal((nt0, nrank))
        W[:, f] = np.linalg.qr(shapes)[0]
        spatial = rng.standard_normal((nnear, nrank)) * 0.3
        spatial[:, 0] = np.exp(-np.arange(nnear) / 2.0)
        U[iC[:, iW[f]], f] = spatial / np.sqrt((spatial ** 2).sum())
    mask = np.zeros((nchan, nfilt))
    for f in range(nfilt):
        mask[iC[:, iW[f]], f] = 1
    overlap = mask.T @ mask
    UtU = overlap > 0  # getMeUtU: templates sharing a channel
    iList = np.argsort(-overlap, axis=0, kind="stable")[:min(nfilt, 3)].astype(np.int32)
    wPCA = np.linalg.qr(rng.standard_normal((nt0, nrank)))[0].astype(np.float32)
    mu = rng.uniform(8, 20, nfilt).astype(np.float32)
    return dict(U=U, W=W, mu=mu, iC=iC, iW=iW, UtU=UtU, iList=iList, wPCA=wPCA, overlap=overlap)


def generic_temporal_templates(rng, nt0, nrank):
    """Unit-norm smooth temporal prototypes (nt0, nrank) float32, like wTEMP: a trough and a
    slower rebound, at random positions and widths."""
    t = np.arange(nt0)[:, None]
    centre = rng.uniform(0.25, 0.5, nrank) * nt0
    width = rng.uniform(0.05, 0.15, nrank) * nt0 + 1
    w = -np.exp(-((t - centre) / width) ** 2) + 0.3 * np.exp(-((t - centre - 2 * width) / (2 * width)) ** 2)
    return (w / np.linalg.norm(w, axis=0)).astype(np.float32)
