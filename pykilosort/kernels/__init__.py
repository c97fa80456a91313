"""Kernels: one Python entry per original mex file, dispatching to CUDA (CuPy) or numba."""
from .clustering import cluster_projections, match_mask
from .distances import template_distances
from .getspikes import detect_new_spikes
from .lfilter import lfilter, lfilter_forward_backward
from .mpnu8 import MatchResult, match_templates
from .preprocessing import common_reference, count_crossings, round_int16
from .registry import registered
from .spikedetector import GenericSpikes, detect_generic_spikes
from .svdsmall import TemplateSVD, template_svd
from .thspkpc import ThresholdSpikes, threshold_spike_pcs
from .wtw import template_cross_correlations

__all__ = ["lfilter", "lfilter_forward_backward", "common_reference", "count_crossings",
           "round_int16", "threshold_spike_pcs", "ThresholdSpikes", "template_cross_correlations",
           "cluster_projections", "match_mask", "template_distances", "detect_new_spikes",
           "template_svd", "TemplateSVD", "match_templates", "MatchResult", "registered",
           "detect_generic_spikes", "GenericSpikes"]
