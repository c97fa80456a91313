function ks25_datashift_reference(ks_path, input_mat, out_dir)
% Kilosort 2.5.2's whole datashift2(rez, 1) (standalone_detector, the histograms, align_block2,
% shift_batch_on_disk2 over every batch) on proc files our pipeline wrote (datashift_input.py:
% a rigid and a non-rigid drifting recording), with pykilosort's detect_generic_spikes answering
% the spikedetector3 mex (mexbridge/spikedetector3.m) and interp1's 'makima' from shims_makima/.
%   octave --no-gui --eval "ks25_datashift_reference('/path/to/Kilosort-v2.5.2', 'in.mat', 'data')"
% Writes ks25_datashift.mat: for each recording x nblocks in {5, 1} (field <rec>_nb<nblocks>)
% the original's st0, F, F0, F0m, dshift, yblk, iorig, wTEMP, wPCA, iC, dist, and its registered
% proc file as per-batch, per-channel sums plus a subsample (rows in proc_rows): whole, it is
% 80 MB.
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'), fullfile(here, 'mexbridge'));
warning('off', 'Octave:shadowed-function');
addpath(fullfile(here, 'shims_makima'));        % 'makima' for interp1 (shift_batch_on_disk2)
addpath(fullfile(ks_path, 'preProcess'), fullfile(ks_path, 'mainLoop'), fullfile(ks_path, 'utils'));
in = load(input_mat);
work = tempname(); mkdir(work);
out = struct();
for rec = {'rigid', 'nonrigid'}
    for nblocks = [5 1]
        name = sprintf('%s_nb%d', rec{1}, nblocks);
        out.(name) = one_case(in.(rec{1}), nblocks, fullfile(work, [name '.dat']));
        fprintf('ks25_datashift_reference: %s done, %d spikes\n', name, size(out.(name).st0, 1));
    end
end
out.version = version();
save('-v7', fullfile(out_dir, 'ks25_datashift.mat'), '-struct', 'out');
confirm_recursive_rmdir(false); rmdir(work, 's');
fprintf('ks25_datashift_reference: done (%s)\n', version());
end

function o = one_case(in, nblocks, fproc)
% datashift2 on a copy of the proc file (shift_batch_on_disk2 rewrites it in place)
check_input(in);
copyfile(in.proc_path, fproc);
rez = make_rez(in, nblocks, fproc);
tic;   % datashift2 prints toc
rez = datashift2(rez, 1);
o = struct();
o.st0 = rez.st0; o.F = rez.F; o.F0 = rez.F0; o.F0m = rez.F0m;
o.dshift = rez.dshift; o.iorig = rez.iorig(:);
o.wTEMP = rez.wTEMP; o.wPCA = rez.wPCA; o.iC = rez.iC; o.dist = rez.dist;
o.yblk = block_centres(rez);
[o.proc_sum, o.proc_sub, o.proc_rows] = registered(rez);
end

function check_input(in)
% the proc file must be the one datashift_input.py described (sha256)
fid = fopen(in.proc_path, 'r'); bytes = fread(fid, Inf, '*uint8'); fclose(fid);
if ~strcmp(hash('sha256', char(bytes')), in.proc_sha256)
    error('ks25_datashift_reference: %s is not the proc file of the input', in.proc_path);
end
end

function rez = make_rez(in, nblocks, fproc)
% the rez/ops fields datashift2 and the functions it calls read (configFile384.m values where
% the input does not give them)
ops = struct();
ops.fproc = fproc;
ops.NT = double(in.NT); ops.ntbuff = double(in.ntbuff); ops.Nbatch = double(in.Nbatch);
ops.Nchan = double(in.Nchan); ops.NchanTOT = double(in.Nchan);
ops.nt0 = double(in.nt0); ops.nt0min = double(in.nt0min); ops.fs = double(in.fs);
ops.scaleproc = double(in.scaleproc); ops.nskip = double(in.nskip); ops.spkTh = double(in.spkTh);
ops.loc_range = double(in.loc_range); ops.long_range = double(in.long_range);
ops.sig = double(in.sig); ops.nblocks = nblocks; ops.fig = 0;
ops.chanMap = (1:ops.Nchan)';
rez = struct();
rez.ops = ops;
rez.xc = double(in.xc(:)); rez.yc = double(in.yc(:));
rez.xcoords = rez.xc; rez.ycoords = rez.yc;
rez.temp.Nbatch = ops.Nbatch;
end

function yblk = block_centres(rez)
% align_block2's yblk, which datashift2 keeps local: the same call on the stored histograms
% (datashift2: dmin = ymin - 1, ysamp = dmin + dd*(1:dmax) - dd/2, dd = 5)
dd = 5;
F = rez.F;
ysamp = min(rez.yc) - 1 + dd * (1:size(F, 1)) - dd/2;
[imin, yblk] = align_block2(F, ysamp, rez.ops.nblocks);
if ~isequal(imin * dd, rez.dshift)
    error('ks25_datashift_reference: align_block2 rerun does not give datashift2''s dshift');
end
end

function [sums, sub, rows] = registered(rez)
% the registered proc file: the sum of each channel over each batch, (Nchan, Nbatch), which any
% difference larger than a few rounding steps anywhere would change, and a subsample: per batch
% its first 2*ntbuff samples (the cross-fade with the previous batch, and after) and every 211th
% sample (a prime stride, walking across sample positions); rows are 1-based.
% (No batch is bit-identical to ours: float32 sums in another order put a few samples per batch
% on the other side of a rounding boundary, so per-batch digests would say nothing.)
NT = rez.ops.NT; Nbatch = rez.ops.Nbatch; Nchan = rez.ops.Nchan; ntb = rez.ops.ntbuff;
fid = fopen(rez.ops.fproc, 'r');
proc = fread(fid, [Nchan NT * Nbatch], '*int16');
fclose(fid);
sums = squeeze(sum(reshape(double(proc), Nchan, NT, Nbatch), 2));
t = 0:NT * Nbatch - 1;
rows = find(mod(t, NT) < 2 * ntb | mod(t, 211) == 0)';
sub = proc(:, rows)';
end
