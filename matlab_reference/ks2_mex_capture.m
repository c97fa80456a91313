function ks2_mex_capture(ks_path, input_dir, out_dir)
% Run the original Kilosort2 v2.0 front to back through learnAndSolve8b on rec32, with every mex
% call answered by pykilosort's kernels (mexbridge/), and keep the exact inputs of selected calls.
%   MEX_CAPTURE_DIR=<out_dir>/mex octave --no-gui --eval "ks2_mex_capture(ks20, inputs, data)"
% Writes <out_dir>/ks2_pipeline_rec32.mat (iorig, ccb, st3, W, U, mu, simScore, dWU, Wraw, nsp,
% muA, cProj, cProjPC, and learnTemplates' nsp going into and out of each triageTemplates2 call:
% triage_nsp_in, triage_nsp_out), the rez fields the post-processing reads
% (<out_dir>/ks2_capture_rez_rec32.mat) and, through mex_bridge.py,
% <out_dir>/mex/<mex name>_<call index>.mat plus calls.json (Params of every call).
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'), fullfile(here, 'mexbridge'));
addpath(fullfile(ks_path, 'preProcess'), fullfile(ks_path, 'mainLoop'), fullfile(ks_path, 'utils'));
% learnTemplates' spike-count estimate nsp never leaves it; capture/triageTemplates2.m records it
% on its way through triageTemplates2 and calls the original through this handle
global KS2_TRIAGE
KS2_TRIAGE = struct('original', @triageTemplates2, 'nsp_in', {{}}, 'nsp_out', {{}});
original = functions(KS2_TRIAGE.original).file;
if ~strcmp(original, canonicalize_file_name(fullfile(ks_path, 'mainLoop', 'triageTemplates2.m')))
  error('triageTemplates2 resolves to %s, not the checkout''s', original);
end
addpath(fullfile(here, 'capture'));
pkg load signal
set(0, 'defaultfigurevisible', 'off');
capture = getenv('MEX_CAPTURE_DIR');
if isempty(capture), error('set MEX_CAPTURE_DIR to the folder for the captured calls'); end
if exist(fullfile(capture, 'calls.json'), 'file'), delete(fullfile(capture, 'calls.json')); end
work = tempname(); mkdir(work);
ops = ks2_default_ops(input_dir, work, 'rec32');
ops.NT = 32*1024 + ops.ntbuff;  % 10 batches: more learning steps, smaller fixtures
rez = preprocessDataSub(ops);
rez = clusterSingleBatches(rez);
rez = learnAndSolve8b(rez);
rmpath(fullfile(here, 'capture'));
moved = functions(KS2_TRIAGE.original).file;
if ~strcmp(moved, original), error('the handle to triageTemplates2 moved to %s', moved); end
iorig = rez.iorig; ccb = rez.ccb; st3 = rez.st3; W = rez.W; U = rez.U; mu = rez.mu;
simScore = rez.simScore; Nbatch = rez.ops.Nbatch; NT = ops.NT;
% learnTemplates' final templates (memorizeW), trackAndSort's nsp (second half of the batches)
% and per-batch mu, the features of every spike (rows in st3's order)
dWU = rez.dWU; Wraw = rez.Wraw; nsp = rez.nsp; muA = rez.muA; cProj = rez.cProj;
cProjPC = rez.cProjPC;
triage_nsp_in = KS2_TRIAGE.nsp_in; triage_nsp_out = KS2_TRIAGE.nsp_out;
save('-v7', fullfile(out_dir, 'ks2_pipeline_rec32.mat'), 'iorig', 'ccb', 'st3', 'W', 'U', 'mu', ...
     'simScore', 'Nbatch', 'NT', 'dWU', 'Wraw', 'nsp', 'muA', 'cProj', 'cProjPC', ...
     'triage_nsp_in', 'triage_nsp_out');
% what the post-processing needs (ks2_postprocess_reference.m runs it on this rez)
keep = {'st3', 'st2', 'cProj', 'cProjPC', 'dWU', 'W', 'U', 'mu', 'simScore', 'iNeigh', ...
        'iNeighPC', 'Wrot', 'xc', 'yc', 'xcoords', 'ycoords'};
post = struct();
for k = 1:numel(keep), post.(keep{k}) = rez.(keep{k}); end
opsk = {'fs', 'Th', 'AUCsplit', 'sigmaMask', 'nt0', 'nt0min', 'Nchan', 'NchanTOT', 'chanMap', ...
        'scaleproc', 'wPCA', 'fbinary', 'fproc'};
for k = 1:numel(opsk), post.ops.(opsk{k}) = rez.ops.(opsk{k}); end
[~, name, ext] = fileparts(post.ops.fbinary); post.ops.fbinary = [name ext];
post.ops.fproc = 'temp_wh.dat';
rez = post;
save('-v7', fullfile(out_dir, 'ks2_capture_rez_rec32.mat'), 'rez');
fprintf('ks2_mex_capture: %d spikes, %d templates\n', size(st3, 1), size(W, 2));
end
