function ks25_reference(ks25_path, input_dir, out_dir)
% Run Kilosort 2.5 (MouseLand/Kilosort tag v2.5.2) preprocessing under GNU Octave, and the channel
% covariance of get_whitening_matrix, whose v2.5.2 body equals v2.0's but also returns CC.
%   octave --no-gui --eval "ks25_reference('/path/to/Kilosort-v2.5.2', 'inputs', 'data')"
% Needs the ks2_preprocess_*.mat and ks2_proc_small_rec32.mat written by ks2_reference.m.
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'));
addpath(fullfile(ks25_path, 'preProcess'), fullfile(ks25_path, 'mainLoop'), fullfile(ks25_path, 'utils'));
pkg load signal
work = tempname(); mkdir(work);

% KS2 covariance (v2.0 batch geometry) for the default-NT runs and the small-NT run
for name = {'rec32', 'rec64'}
    name = name{1};
    ref = load(fullfile(out_dir, ['ks2_preprocess_' name '.mat']));
    CC = ks2_covariance(input_dir, name, ref, ref.NT, 25);
    save('-v7', fullfile(out_dir, ['ks2_covariance_' name '.mat']), 'CC');
end
ref = load(fullfile(out_dir, 'ks2_proc_small_rec32.mat'));
CC = ks2_covariance(input_dir, 'rec32', ref, double(ref.NT), double(ref.nSkipCov));
save('-v7', fullfile(out_dir, 'ks2_covariance_small_rec32.mat'), 'CC');

% KS2.5 preprocessDataSub: NT = 8*1024 - ntbuff, fshigh 300 (configFile384.m of v2.5)
ops = base_ops(input_dir, work, 'rec32');
ops.fshigh = 300; ops.ntbuff = 64; ops.NT = 8*1024 - ops.ntbuff; ops.nSkipCov = 4;
rez = preprocessDataSub(ops);
[Wrot_again, CC] = get_whitening_matrix(rez);
keep = [1 2 19 rez.ops.Nbatch-1 rez.ops.Nbatch];
Nchan = rez.ops.Nchan; NT = ops.NT; Nbatch = rez.ops.Nbatch; Wrot = rez.Wrot;
fid = fopen(ops.fproc, 'r');
proc = zeros(Nchan, NT, numel(keep), 'int16');   % KS2.5 writes int16(datr'): channel fastest
for k = 1:numel(keep)
    fseek(fid, 2 * NT * Nchan * (keep(k) - 1), 'bof');
    proc(:, :, k) = fread(fid, [Nchan NT], '*int16');
end
fclose(fid);
chanMap = rez.ops.chanMap; fshigh = ops.fshigh; nSkipCov = ops.nSkipCov;
save('-v7', fullfile(out_dir, 'ks25_proc_small_rec32.mat'), 'proc', 'keep', 'Wrot', 'CC', ...
     'Nbatch', 'chanMap', 'NT', 'fshigh', 'nSkipCov');
fprintf('ks25_reference: done (%s)\n', version());
end

function CC = ks2_covariance(input_dir, name, ref, NT, nSkipCov)
% rez as Kilosort2 v2.0's preprocessDataSub hands it to get_whitening_matrix
ops = base_ops(input_dir, '', name);
ops.NT = NT; ops.nSkipCov = nSkipCov;
info = dir(ops.fbinary);
nsamp = floor(info.bytes / ops.NchanTOT / 2);
ops.twind = 0;
ops.Nbatch = ceil(nsamp / (NT - ops.ntbuff));
ops.NTbuff = NT + 4 * ops.ntbuff;
ops.chanMap = ref.chanMap(:);
ops.Nchan = numel(ops.chanMap);
rez.ops = ops; rez.xc = ref.xc(:); rez.yc = ref.yc(:);
[~, CC] = get_whitening_matrix(rez);
end

function ops = base_ops(input_dir, work, name)
ops.fbinary = fullfile(input_dir, [name '.bin']);
ops.fproc = fullfile(work, [name '_proc.dat']);
ops.chanMap = fullfile(input_dir, [name '_chanMap.mat']);
cm = load(ops.chanMap);
ops.NchanTOT = double(cm.NchanTOT);
ops.fs = 30000; ops.fshigh = 150; ops.ntbuff = 64; ops.whiteningRange = 32; ops.scaleproc = 200;
ops.nSkipCov = 25; ops.trange = [0 Inf]; ops.spkTh = -6; ops.nt0 = 61; ops.nfilt_factor = 4;
ops.minfr_goodchannels = 0.1; ops.sigmaMask = 30;
end
