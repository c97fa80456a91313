function ks2_reference(ks_path, input_dir, out_dir)
% Run the original Kilosort2 (MouseLand/Kilosort tag v2.0) preprocessing functions under GNU Octave
% on our synthetic recordings and save what they return, for pykilosort's reference tests.
%   octave --no-gui --eval "ks2_reference('/path/to/Kilosort-v2.0', 'inputs', 'data')"
% ks_path: a checkout of Kilosort2 v2.0 (never committed here). Outputs: <out_dir>/ks2_*.mat (-v7).
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'));
addpath(fullfile(ks_path, 'preProcess'), fullfile(ks_path, 'mainLoop'), fullfile(ks_path, 'utils'));
pkg load signal
if ~exist(out_dir, 'dir'), mkdir(out_dir); end
work = tempname(); mkdir(work);

for name = {'rec32', 'rec64'}
    name = name{1};
    ops = ks2_default_ops(input_dir, work, name);
    % gpufilter on the first samples of the file (a batch without buffers)
    [chanMap, xc, yc] = loadChanMap(ops.chanMap);
    nsamp = 8192; if strcmp(name, 'rec64'), nsamp = 4096; end
    fid = fopen(ops.fbinary, 'r'); buff = fread(fid, [ops.NchanTOT nsamp], '*int16'); fclose(fid);
    datr = gpufilter(buff, ops, chanMap);
    save('-v7', fullfile(out_dir, ['ks2_gpufilter_' name '.mat']), 'datr', 'chanMap', 'nsamp');
    % the whole preprocessing at the default batch size: igood, Wrot
    rez = preprocessDataSub(ops);
    igood = rez.ops.igood; Wrot = rez.Wrot; Nbatch = rez.ops.Nbatch; chanMap = rez.ops.chanMap;
    xc = rez.xc; yc = rez.yc; NT = ops.NT;
    save('-v7', fullfile(out_dir, ['ks2_preprocess_' name '.mat']), 'igood', 'Wrot', 'Nbatch', ...
         'chanMap', 'xc', 'yc', 'NT');
    % nearest channels and their Gaussian mask, as learnAndSolve8b calls it
    NchanNear = min(rez.ops.Nchan, 32);
    [iC, mask, C2C] = getClosestChannels(rez, ops.sigmaMask, NchanNear);
    save('-v7', fullfile(out_dir, ['ks2_closest_' name '.mat']), 'iC', 'mask', 'C2C', 'NchanNear');
end

% small batches on rec32: many batches (covariance divisor quirk, first/middle/last batch geometry)
ops = ks2_default_ops(input_dir, work, 'rec32');
ops.NT = 8192 + ops.ntbuff; ops.nSkipCov = 4;
rez = preprocessDataSub(ops);
keep = [1 2 19 26 rez.ops.Nbatch-1 rez.ops.Nbatch];  % 1 and 26: the batches nskip=25 reads
Nchan = rez.ops.Nchan; NT = ops.NT; nSkipCov = ops.nSkipCov;
fid = fopen(ops.fproc, 'r');
proc = zeros(NT, Nchan, numel(keep), 'int16');
for k = 1:numel(keep)
    fseek(fid, 2 * NT * Nchan * (keep(k) - 1), 'bof');
    proc(:, :, k) = fread(fid, [NT Nchan], '*int16');
end
fclose(fid);
igood = rez.ops.igood; Wrot = rez.Wrot; Nbatch = rez.ops.Nbatch; chanMap = rez.ops.chanMap;
xc = rez.xc; yc = rez.yc;
save('-v7', fullfile(out_dir, 'ks2_proc_small_rec32.mat'), 'proc', 'keep', 'igood', 'Wrot', ...
     'Nbatch', 'chanMap', 'xc', 'yc', 'NT', 'nSkipCov');

% isolated_peaks_new on a whitened batch, as extractPCfromSnippets feeds it
S1 = single(proc(:, :, 2)) / ops.scaleproc;
[row, col, mu] = isolated_peaks_new(S1, rez.ops);
save('-v7', fullfile(out_dir, 'ks2_isolated_peaks_rec32.mat'), 'row', 'col', 'mu');

% PCs and template prototypes of 1-D spike waveforms, with the seeded random stream
wPCA_pc = extractPCfromSnippets(rez, 3);
rng('default'); rng(1);
[wTEMP, wPCA] = extractTemplatesfromSnippets(rez, 3);
save('-v7', fullfile(out_dir, 'ks2_snippets_rec32.mat'), 'wPCA_pc', 'wTEMP', 'wPCA');

% sortBatches2 on a dissimilarity matrix of shuffled 1-D positions plus noise
rng('default'); rng(3);
pos = randperm(24)'; noise = rand(24); noise = (noise + noise') / 2;
ccb0 = log(1 + (pos - pos').^2 / 10) + 0.3 * noise; ccb0 = (ccb0 - mean(ccb0(:))) / std(ccb0(:));
[ccb1, isort, xs] = sortBatches2(ccb0);
save('-v7', fullfile(out_dir, 'ks2_sortbatches.mat'), 'ccb0', 'ccb1', 'isort', 'xs');

% initializeWdata2 on seeded projections (as clusterSingleBatches calls it after rng(CSBseed))
rng('default'); rng(5);
Nchan_i = 24; nPCs_i = 3; Nfilt_i = 16; nspk_i = 300;
pre = load(fullfile(out_dir, 'ks2_preprocess_rec32.mat'));
rz.xc = pre.xc(1:Nchan_i); rz.yc = pre.yc(1:Nchan_i);
iC_i = getClosestChannels(rz, 30, 17);
uproj_i = single(randn(nPCs_i * 17, nspk_i)); call_i = randi(Nchan_i, nspk_i, 1);
rng('default'); rng(1);
[W_i, mu_i, Wheights_i, irand_i] = initializeWdata2(call_i, uproj_i, Nchan_i, nPCs_i, Nfilt_i, iC_i);
save('-v7', fullfile(out_dir, 'ks2_initwdata.mat'), 'iC_i', 'uproj_i', 'call_i', 'W_i', 'mu_i', ...
     'Wheights_i', 'irand_i', 'Nchan_i', 'nPCs_i', 'Nfilt_i');

% kriging upsampling kernels of mexSVDsmall2 (nup 10, sig 1 as in learnAndSolve8b)
[Ka, Kb] = getKernels(rez.ops, 10, 1);
save('-v7', fullfile(out_dir, 'ks2_kernels.mat'), 'Ka', 'Kb');
fprintf('ks2_reference: done (%s)\n', version());
end
