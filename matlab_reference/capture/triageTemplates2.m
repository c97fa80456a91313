function [W, U, dWU, mu, nsp, ndrop] = triageTemplates2(ops, iW, C2C, W, U, dWU, mu, nsp, ndrop)
% Capture stand-in, on the path of ks2_mex_capture.m only: records the spike-count estimate nsp
% that learnTemplates passes to triageTemplates2 and gets back (learnTemplates keeps its nsp to
% itself: rez.nsp is trackAndSort's), then runs the original triageTemplates2 unchanged through
% the handle ks2_mex_capture.m took before this folder shadowed it (were that handle to resolve
% to this file, Octave would stop at its recursion limit).
global KS2_TRIAGE
nsp_in = double(gather(nsp(:)));
[W, U, dWU, mu, nsp, ndrop] = KS2_TRIAGE.original(ops, iW, C2C, W, U, dWU, mu, nsp, ndrop);
KS2_TRIAGE.nsp_in{end + 1} = nsp_in;
KS2_TRIAGE.nsp_out{end + 1} = double(gather(nsp(:)));
end
